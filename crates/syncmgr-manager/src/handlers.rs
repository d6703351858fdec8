//! Turns a stored registration into a running [`Handler`].

use std::time::Duration;

use async_trait::async_trait;
use syncmgr_core::{
    Handler, HandlerCallback, HandlerError, HandlerInfo, InitializeParams, ItemEnumeration,
    Participation, PropertiesOutcome,
};
use syncmgr_protocol::ProcessHandler;
use syncmgr_store::{HandlerKind, Registration};

use crate::error::ManagerError;

/// The silence timeout of a handler registered without `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The handler a registration describes. A process handler is started only
/// when the engine gets to it (`--max-concurrent` may keep it waiting, and a
/// cancel may mean it never runs at all). `all` are every registration (a
/// built-in may check itself against the others).
pub fn build_handler(
    registration: &Registration,
    all: &[Registration],
) -> Result<Box<dyn Handler>, ManagerError> {
    match &registration.kind {
        HandlerKind::Process { argv } => Ok(process_handler(argv)),
        HandlerKind::Builtin { kind, config } => {
            crate::builtin::build(&registration.name, kind, config, all)
        }
    }
}

/// A handler program, started on first use; a program that cannot start
/// fails its `initialize` with the spawn error.
pub fn process_handler(argv: &[String]) -> Box<dyn Handler> {
    Box::new(LazyProcess {
        argv: argv.to_vec(),
        state: Lazy::NotStarted(None),
    })
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

#[async_trait]
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

/// A process handler that spawns its child on first use.
#[derive(Debug)]
struct LazyProcess {
    argv: Vec<String>,
    state: Lazy,
}

#[derive(Debug)]
enum Lazy {
    NotStarted(Option<HandlerCallback>),
    Running(ProcessHandler),
    Failed(HandlerError),
}

impl LazyProcess {
    fn started(&mut self) -> Result<&mut ProcessHandler, HandlerError> {
        if let Lazy::NotStarted(callback) = &mut self.state {
            let callback = callback.take();
            self.state = match ProcessHandler::spawn(&self.argv, None, &[]) {
                Ok(mut handler) => {
                    if let Some(callback) = callback {
                        handler.set_callback(callback);
                    }
                    Lazy::Running(handler)
                }
                Err(e) => Lazy::Failed(e),
            };
        }
        match &mut self.state {
            Lazy::Running(handler) => Ok(handler),
            Lazy::Failed(e) => Err(e.clone()),
            Lazy::NotStarted(_) => unreachable!("started above"),
        }
    }
}

#[async_trait]
impl Handler for LazyProcess {
    fn set_callback(&mut self, callback: HandlerCallback) {
        match &mut self.state {
            Lazy::Running(handler) => handler.set_callback(callback),
            Lazy::NotStarted(slot) => *slot = Some(callback),
            Lazy::Failed(_) => {}
        }
    }

    async fn initialize(
        &mut self,
        params: &InitializeParams,
    ) -> Result<Participation, HandlerError> {
        self.started()?.initialize(params).await
    }

    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError> {
        self.started()?.handler_info().await
    }

    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError> {
        self.started()?.enum_items().await
    }

    async fn show_properties(
        &mut self,
        item: Option<&str>,
    ) -> Result<PropertiesOutcome, HandlerError> {
        self.started()?.show_properties(item).await
    }

    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.started()?.prepare_for_sync(items, callback).await
    }

    async fn synchronize(&mut self, callback: &HandlerCallback) -> Result<(), HandlerError> {
        self.started()?.synchronize(callback).await
    }

    async fn show_error(
        &mut self,
        error_id: &str,
        callback: &HandlerCallback,
    ) -> Result<syncmgr_core::ShowErrorAnswer, HandlerError> {
        self.started()?.show_error(error_id, callback).await
    }

    async fn resolve_conflict(
        &mut self,
        resolution: &syncmgr_core::ConflictResolution,
        callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.started()?.resolve_conflict(resolution, callback).await
    }

    async fn shutdown(&mut self) {
        if let Lazy::Running(handler) = &mut self.state {
            handler.shutdown().await;
        }
    }

    fn terminate(&mut self) {
        if let Lazy::Running(handler) = &mut self.state {
            handler.terminate();
        }
    }
}
