//! Image templates (`[[webhook.sources]] images`), e.g. `registry.example.com/{repository}:{sha}`:
//! the images of a build whose webhook names none, rendered from what its CI reported. The
//! registry host is always literal (it decides where credentials go); every `{variable}` must be
//! one of [`Variable`]. A build that lacks a variable a template uses, or whose values do not make
//! an image reference, cannot be rendered: the error names the template.

use std::fmt;
use std::str::FromStr;

use super::build::{BuildCompleted, ImageRef};

/// A variable an image template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// The repository path without host (`octo-org/octo-repo`), as the CI names it.
    Repository,
    /// The commit.
    Sha,
    /// The short name of the ref (`main`, or `v1.2` for a tag).
    Branch,
    /// The full ref (`refs/heads/main`, `refs/tags/v1.2`).
    Ref,
    /// The pipeline (workflow path, project path, Tekton pipeline or task, Harness pipeline id).
    Pipeline,
    /// The execution key (`{run id}/{attempt}` on GitHub, the pipeline id on GitLab, …).
    Execution,
}

impl Variable {
    pub const ALL: [Variable; 6] = [
        Self::Repository,
        Self::Sha,
        Self::Branch,
        Self::Ref,
        Self::Pipeline,
        Self::Execution,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repository => "repository",
            Self::Sha => "sha",
            Self::Branch => "branch",
            Self::Ref => "ref",
            Self::Pipeline => "pipeline",
            Self::Execution => "execution",
        }
    }

    /// A typical value, for checking templates at start-up.
    fn sample(self) -> &'static str {
        match self {
            Self::Repository => "owner/repository",
            Self::Sha => "0123456789abcdef0123456789abcdef01234567",
            Self::Branch => "main",
            Self::Ref => "refs/heads/main",
            Self::Pipeline => "pipeline",
            Self::Execution => "1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Variable),
}

/// One parsed `images` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTemplate {
    text: String,
    host: String,
    parts: Vec<Part>,
}

impl ImageTemplate {
    /// The registry host (literal in every template).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the repository path is written out (no variable before the tag): then the
    /// source's grants can be checked at start-up.
    pub fn has_literal_repository(&self) -> bool {
        let mut path = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => path.push_str(text),
                Part::Var(_) => return path.rfind(':').is_some_and(|c| c > self.host.len()),
            }
        }
        true
    }

    /// The image for one build, or why it cannot be rendered.
    pub fn render(&self, vars: &TemplateVars) -> Result<ImageRef, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(v) => out.push_str(vars.get(*v).ok_or_else(|| {
                    format!(
                        "template '{}' uses {{{}}}, which this build does not have",
                        self.text,
                        v.as_str()
                    )
                })?),
            }
        }
        let image: ImageRef = out.parse().map_err(|e| {
            format!(
                "template '{}' rendered '{out}', which is not an image reference: {e}",
                self.text
            )
        })?;
        if image.tag.is_none() {
            return Err(format!(
                "template '{}' rendered '{out}', which has no tag",
                self.text
            ));
        }
        Ok(image)
    }

    /// The image rendered with typical values: what start-up checks.
    pub fn sample(&self) -> Result<ImageRef, String> {
        self.render(&TemplateVars::sample())
    }
}

impl fmt::Display for ImageTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ImageTemplate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("'{s}' has a '}}' without its '{{'"));
            }
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("'{s}' has a '{{' without its '}}'"))?;
            let name = &after[..close];
            let variable = Variable::ALL
                .into_iter()
                .find(|v| v.as_str() == name)
                .ok_or_else(|| {
                    format!(
                        "'{s}' uses {{{name}}}; the variables are {}",
                        Variable::ALL
                            .iter()
                            .map(|v| format!("{{{}}}", v.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(variable));
            rest = &after[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let host = match parts.first() {
            Some(Part::Literal(text)) => text.split_once('/').map(|(host, _)| host.to_owned()),
            _ => None,
        }
        .filter(|host| !host.is_empty())
        .ok_or_else(|| {
            format!(
                "'{s}' must start with a registry host written out, e.g. 'registry.example.com/…'"
            )
        })?;
        let template = Self {
            text: s.to_owned(),
            host,
            parts,
        };
        template.sample()?;
        Ok(template)
    }
}

/// The values a build offers to templates; `None` where its CI reported nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    pub repository: Option<String>,
    pub sha: Option<String>,
    pub branch: Option<String>,
    pub git_ref: Option<String>,
    pub pipeline: Option<String>,
    pub execution: Option<String>,
}

impl TemplateVars {
    /// The variables of `build`; `repository` is the path its CI named (none for Harness).
    pub fn of(build: &BuildCompleted, repository: Option<&str>) -> Self {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let branch = build.branch.trim();
        let short = branch
            .strip_prefix("refs/heads/")
            .or_else(|| branch.strip_prefix("refs/tags/"))
            .unwrap_or(branch);
        let git_ref = if branch.is_empty() || branch.starts_with("refs/") {
            some(branch)
        } else {
            Some(format!("refs/heads/{branch}"))
        };
        Self {
            repository: repository.and_then(some),
            sha: some(&build.commit_sha),
            branch: some(short),
            git_ref,
            pipeline: some(&build.pipeline_identifier),
            execution: some(&build.pipeline_execution_id),
        }
    }

    fn sample() -> Self {
        let s = |v: Variable| Some(v.sample().to_owned());
        Self {
            repository: s(Variable::Repository),
            sha: s(Variable::Sha),
            branch: s(Variable::Branch),
            git_ref: s(Variable::Ref),
            pipeline: s(Variable::Pipeline),
            execution: s(Variable::Execution),
        }
    }

    fn get(&self, v: Variable) -> Option<&str> {
        match v {
            Variable::Repository => self.repository.as_deref(),
            Variable::Sha => self.sha.as_deref(),
            Variable::Branch => self.branch.as_deref(),
            Variable::Ref => self.git_ref.as_deref(),
            Variable::Pipeline => self.pipeline.as_deref(),
            Variable::Execution => self.execution.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        TemplateVars {
            repository: Some("octo-org/octo-repo".into()),
            sha: Some("3484a3fb816e0859fd6e1cea078d76385ff50625".into()),
            branch: Some("master".into()),
            git_ref: Some("refs/heads/master".into()),
            pipeline: Some("build".into()),
            execution: Some("289782451/1".into()),
        }
    }

    #[test]
    fn variables_are_rendered_into_an_image_with_a_tag() {
        let t: ImageTemplate = "registry.example.com:5000/{repository}:{sha}"
            .parse()
            .unwrap();
        assert_eq!(t.host(), "registry.example.com:5000");
        let image = t.render(&vars()).unwrap();
        assert_eq!(image.registry, "registry.example.com:5000");
        assert_eq!(image.repository, "octo-org/octo-repo");
        assert_eq!(
            image.tag.as_deref(),
            Some("3484a3fb816e0859fd6e1cea078d76385ff50625")
        );
        let t: ImageTemplate = "localhost:5000/acme/{pipeline}:{branch}-{sha}"
            .parse()
            .unwrap();
        assert_eq!(
            t.render(&vars()).unwrap().to_string(),
            "localhost:5000/acme/build:master-3484a3fb816e0859fd6e1cea078d76385ff50625"
        );
    }

    #[test]
    fn unknown_variables_unbalanced_braces_templated_hosts_and_missing_tags_are_refused() {
        for (bad, says) in [
            ("registry.example.com/{repo}:{sha}", "{repo}"),
            ("registry.example.com/acme/app:{sha", "without its '}'"),
            ("registry.example.com/acme/app:sha}", "without its '{'"),
            ("{repository}/app:{sha}", "registry host"),
            ("registry.{branch}.com/app:{sha}", "registry host"),
            ("registry.example.com/acme/{repository}", "no tag"),
            ("registry.example.com/acme/app:{ref}", "not a valid OCI tag"),
            ("acme/app:{sha}", "registry host"),
        ] {
            let err = bad.parse::<ImageTemplate>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_variable_the_build_lacks_or_a_value_that_makes_no_image_is_a_clear_error() {
        let t: ImageTemplate = "registry.example.com/{repository}:{sha}".parse().unwrap();
        let mut harness = vars();
        harness.repository = None;
        let err = t.render(&harness).unwrap_err();
        assert!(
            err.contains("registry.example.com/{repository}:{sha}") && err.contains("{repository}"),
            "{err}"
        );
        let t: ImageTemplate = "registry.example.com/acme/app:{execution}".parse().unwrap();
        let err = t.render(&vars()).unwrap_err();
        assert!(
            err.contains("registry.example.com/acme/app:{execution}") && err.contains("tag"),
            "{err}"
        );
        let mut upper = vars();
        upper.repository = Some("Octo-Org/Octo-Repo".into());
        let t: ImageTemplate = "registry.example.com/{repository}:{sha}".parse().unwrap();
        assert!(t.render(&upper).unwrap_err().contains("repository"));
    }

    #[test]
    fn only_a_written_out_repository_is_literal() {
        let literal = |s: &str| s.parse::<ImageTemplate>().unwrap().has_literal_repository();
        assert!(literal("registry.example.com/acme/app:{sha}"));
        assert!(literal("registry.example.com/acme/app:v1"));
        assert!(literal("localhost:5000/acme/app:{sha}"));
        assert!(!literal("localhost:5000/acme/{repository}:{sha}"));
        assert!(!literal("registry.example.com/acme/app-{branch}:{sha}"));
    }

    #[test]
    fn build_variables_split_the_ref_into_branch_and_full_ref() {
        let mut build = crate::domain::provenance::tests::build();
        build.branch = "refs/tags/v1.2".into();
        let v = TemplateVars::of(&build, Some("acme/app"));
        assert_eq!(v.branch.as_deref(), Some("v1.2"));
        assert_eq!(v.git_ref.as_deref(), Some("refs/tags/v1.2"));
        build.branch = "main".into();
        let v = TemplateVars::of(&build, None);
        assert_eq!(v.branch.as_deref(), Some("main"));
        assert_eq!(v.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(v.repository, None);
        assert_eq!(v.execution.as_deref(), Some("exec-42"));
        build.branch = String::new();
        let v = TemplateVars::of(&build, Some(" "));
        assert_eq!((v.branch, v.git_ref, v.repository), (None, None, None));
    }
}
