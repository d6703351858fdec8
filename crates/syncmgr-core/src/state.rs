//! The per-item state machine: which status may follow which.
//!
//! Sync Center's rule, which mobsync left implicit: terminal statuses are
//! final, except that `failed` may follow any of them (a handler that finds a
//! problem after reporting success may still say so). Everything else may
//! follow anything non-terminal.

use crate::model::ItemStatus;

/// Checks that `to` may follow `from`; on refusal returns `from`.
pub fn check_transition(from: ItemStatus, to: ItemStatus) -> Result<(), ItemStatus> {
    if from.is_terminal() && to != ItemStatus::Failed {
        Err(from)
    } else {
        Ok(())
    }
}

/// The status an item gets when the manager must end it because the handler
/// did not: `stopped` when a cancel was asked for it, otherwise `failed`.
pub fn forced_end(cancelled: bool) -> ItemStatus {
    if cancelled {
        ItemStatus::Stopped
    } else {
        ItemStatus::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_is_final_but_failed_may_follow() {
        for &from in ItemStatus::ALL {
            for &to in ItemStatus::ALL {
                let allowed = check_transition(from, to).is_ok();
                let expected = !from.is_terminal() || to == ItemStatus::Failed;
                assert_eq!(allowed, expected, "{from} -> {to}");
            }
        }
    }
}
