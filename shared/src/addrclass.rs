//! Skeleton: address classification.
