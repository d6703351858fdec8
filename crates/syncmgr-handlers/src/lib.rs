//! Built-in handlers that run inside the manager (no child process for the
//! handler itself): the folder mirror and the command wrapper.

pub mod command;
pub mod folder;
