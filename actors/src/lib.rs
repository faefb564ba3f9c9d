//! ffrtmp actors.
