//! The bridge agent library.
