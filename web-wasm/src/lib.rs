//! The page module.
