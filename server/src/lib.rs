//! The cardbridge server library.
