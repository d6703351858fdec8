//! The folder mirror (being written).
