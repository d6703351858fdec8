//! `syncmgr cancel`: says what the cancels sent through the sessions'
//! control sockets reached (`syncmgr_manager::control` has both sides).

use std::io::Write as _;

use syncmgr_manager::Home;
use syncmgr_store::Store;

use crate::exit_codes;
use crate::output::Stdout;

/// `syncmgr cancel`: sends the cancels to every running session of the home
/// and says how many it reached.
pub async fn cancel(
    home: &Home,
    store: &Store,
    targets: &[String],
    out: &mut Stdout,
) -> anyhow::Result<i32> {
    let sessions = syncmgr_manager::control::cancel(home, store, targets).await?;
    writeln!(
        out,
        "cancel sent to {sessions} running session{}",
        if sessions == 1 { "" } else { "s" }
    )?;
    Ok(exit_codes::SUCCESS)
}
