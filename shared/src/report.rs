//! Skeleton: report schema.
