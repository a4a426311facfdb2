//! What an authenticated source may report: its own account, repositories the operator gave it,
//! and builder identities the operator gave it. Checked after parsing and before anything is
//! written, so provenance signed by attestd never says more than the source was trusted with.

use super::FieldError;
use super::signature::WebhookSource;
use crate::domain::BuildCompleted;

/// Why an authenticated, well-formed build was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body names another account than the source's.
    AccountMismatch(String),
    /// `builderId` is not one of the source's `builder_ids`.
    BuilderNotAllowed(String),
    /// These artifacts are outside the source's `repositories`.
    RepositoryNotAllowed(Vec<FieldError>),
}

impl WebhookSource {
    /// Check `build` against this source's grants, fill in the builder id the operator
    /// configured (when the webhook named none) and record the source's name.
    pub fn admit(&self, build: &mut BuildCompleted) -> Result<(), Refusal> {
        if build.account != self.account {
            return Err(Refusal::AccountMismatch(format!(
                "this webhook source may only report builds of account '{}'",
                self.account
            )));
        }
        let builder = if build.builder_id.is_empty() {
            self.builder_ids.first()
        } else {
            self.builder_ids.iter().find(|id| **id == build.builder_id)
        };
        let Some(builder) = builder else {
            return Err(Refusal::BuilderNotAllowed(format!(
                "webhook source '{}' may not claim builder '{}'; it may claim: {}",
                self.name,
                build.builder_id,
                self.builder_ids.join(", ")
            )));
        };
        build.builder_id = builder.clone();
        let refused: Vec<FieldError> = build
            .artifacts
            .iter()
            .enumerate()
            .filter(|(_, a)| !self.repositories.allows(&a.image))
            .map(|(i, a)| FieldError {
                field: format!("artifacts[{i}].image"),
                message: format!(
                    "webhook source '{}' may not attest images of repository '{}'",
                    self.name,
                    a.image.name()
                ),
            })
            .collect();
        if !refused.is_empty() {
            return Err(Refusal::RepositoryNotAllowed(refused));
        }
        build.source = self.name.clone();
        Ok(())
    }
}
