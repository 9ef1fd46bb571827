//! `seckill bench`: a rehearsal of a flash sale with invariant checks.

pub mod load;
