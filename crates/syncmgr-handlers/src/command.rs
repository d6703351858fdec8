//! The command wrapper (being written).
