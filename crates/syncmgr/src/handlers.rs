//! Turns a stored registration into a running [`Handler`].

use std::time::Duration;

use anyhow::Context;
use syncmgr_core::Handler;
use syncmgr_protocol::ProcessHandler;
use syncmgr_store::{HandlerKind, Registration};

/// The silence timeout of a handler registered without `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the handler a registration describes.
pub fn build_handler(registration: &Registration) -> anyhow::Result<Box<dyn Handler>> {
    match &registration.kind {
        HandlerKind::Process { argv } => {
            let handler = ProcessHandler::spawn(argv, None, &[])
                .with_context(|| format!("starting handler {}", registration.name))?;
            Ok(Box::new(handler))
        }
        HandlerKind::Builtin { kind, .. } => anyhow::bail!(
            "handler {} is of the built-in kind {kind:?}, which this version does not have",
            registration.name
        ),
    }
}

/// Stands in for a handler that could not be started, so that the failure
/// takes the same path as any other: a log entry and a failed session.
#[derive(Debug)]
pub struct FailedHandler {
    reason: String,
}

impl FailedHandler {
    /// A handler whose every call fails with `reason`.
    pub fn new(reason: String) -> Self {
        FailedHandler { reason }
    }
}

#[async_trait::async_trait]
impl Handler for FailedHandler {
    async fn initialize(
        &mut self,
        _: &syncmgr_core::InitializeParams,
    ) -> Result<syncmgr_core::Participation, syncmgr_core::HandlerError> {
        Err(syncmgr_core::HandlerError::Spawn(self.reason.clone()))
    }

    async fn handler_info(
        &mut self,
    ) -> Result<syncmgr_core::HandlerInfo, syncmgr_core::HandlerError> {
        Err(syncmgr_core::HandlerError::Spawn(self.reason.clone()))
    }

    async fn enum_items(
        &mut self,
    ) -> Result<syncmgr_core::ItemEnumeration, syncmgr_core::HandlerError> {
        Err(syncmgr_core::HandlerError::Spawn(self.reason.clone()))
    }

    async fn prepare_for_sync(
        &mut self,
        _: &[String],
        _: &syncmgr_core::HandlerCallback,
    ) -> Result<(), syncmgr_core::HandlerError> {
        Err(syncmgr_core::HandlerError::Spawn(self.reason.clone()))
    }

    async fn synchronize(
        &mut self,
        _: &syncmgr_core::HandlerCallback,
    ) -> Result<(), syncmgr_core::HandlerError> {
        Err(syncmgr_core::HandlerError::Spawn(self.reason.clone()))
    }
}
