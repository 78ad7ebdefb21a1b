//! An executor's pin, checked against its stored driver before it is planned.

use super::review::PodCreate;
use super::state::AppState;
use crate::pinning::{self, PinCheck, Unverified};

/// The check of an executor's pin against its stored driver; `None` when the pod claims
/// no pin (nothing to look up).
pub(super) async fn check(state: &AppState, create: &PodCreate) -> Option<PinCheck> {
    let claim = pinning::claim_of(&create.pod);
    if !matches!(claim, pinning::Claim::Pin { .. }) {
        return None;
    }
    if !state.engine.pin_jobs {
        return Some(PinCheck::Unverified(Unverified::PinningOff));
    }
    Some(
        state
            .drivers
            .check(&claim, &create.pod, &create.namespace)
            .await,
    )
}
