//! Skeleton: catalogs.
