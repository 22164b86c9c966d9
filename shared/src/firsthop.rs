//! Skeleton: first public hop.
