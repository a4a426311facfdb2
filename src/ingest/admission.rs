//! What an authenticated source may report: its own account, repositories the operator gave it,
//! and builder identities the operator gave it. Checked after parsing and before anything is
//! written, so provenance signed by attestd never says more than the source was trusted with.

use super::FieldError;
use super::signature::WebhookSource;
use crate::domain::template::TemplateVars;
use crate::domain::{BuildCompleted, ImageRef};

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
        let refused = self.outside_repositories(
            build
                .artifacts
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("artifacts[{i}].image"), &a.image)),
        );
        if !refused.is_empty() {
            return Err(Refusal::RepositoryNotAllowed(refused));
        }
        build.source = self.name.clone();
        Ok(())
    }

    /// Render this source's `images` templates for a successful `build` whose webhook named no
    /// image; `repository` is the repository path its CI named. Each image comes with the index
    /// of its template (an image two templates render is kept once); each problem names its
    /// template (`images[i]`).
    pub fn render_images(
        &self,
        build: &BuildCompleted,
        repository: Option<&str>,
    ) -> Result<Vec<(usize, ImageRef)>, Vec<FieldError>> {
        let vars = TemplateVars::of(build, repository);
        let mut images: Vec<(usize, ImageRef)> = Vec::new();
        let mut problems = Vec::new();
        for (i, template) in self.images.iter().enumerate() {
            match template.render(&vars) {
                Ok(image) if !images.iter().any(|(_, seen)| *seen == image) => {
                    images.push((i, image))
                }
                Ok(_) => {}
                Err(message) => problems.push(FieldError {
                    field: format!("images[{i}]"),
                    message,
                }),
            }
        }
        if problems.is_empty() {
            Ok(images)
        } else {
            Err(problems)
        }
    }

    /// Check images rendered from this source's templates ([`render_images`](Self::render_images))
    /// against its `repositories`.
    pub fn admit_images(&self, images: &[(usize, ImageRef)]) -> Result<(), Refusal> {
        let refused = self.outside_repositories(
            images
                .iter()
                .map(|(i, image)| (format!("images[{i}]"), image)),
        );
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Refusal::RepositoryNotAllowed(refused))
        }
    }

    fn outside_repositories<'a>(
        &self,
        images: impl Iterator<Item = (String, &'a ImageRef)>,
    ) -> Vec<FieldError> {
        images
            .filter(|(_, image)| !self.repositories.allows(image))
            .map(|(field, image)| FieldError {
                field,
                message: format!(
                    "webhook source '{}' may not attest images of repository '{}'",
                    self.name,
                    image.name()
                ),
            })
            .collect()
    }
}
