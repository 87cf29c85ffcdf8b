//! Procedural macros of `distill`. Use them through the `distill` crate, which re-exports them.
