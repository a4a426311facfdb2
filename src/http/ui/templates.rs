//! The page templates, embedded in the binary. Every `.html` template auto-escapes what it
//! prints; no template marks user data `|safe`.

use std::sync::LazyLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::error::ApiError;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../../templates/base.html")),
    ("error.html", include_str!("../../../templates/error.html")),
    ("login.html", include_str!("../../../templates/login.html")),
    (
        "executions.html",
        include_str!("../../../templates/executions.html"),
    ),
    (
        "execution.html",
        include_str!("../../../templates/execution.html"),
    ),
    (
        "dashboard.html",
        include_str!("../../../templates/dashboard.html"),
    ),
];

/// The stylesheet served at `/ui/static/attestd.css`.
pub const STYLESHEET: &str = include_str!("../../../templates/static/attestd.css");

static ENVIRONMENT: LazyLock<Result<Environment<'static>, minijinja::Error>> =
    LazyLock::new(environment);

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    // Explicit rather than relying on the default: HTML escaping for every page template.
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.add_filter("when", when);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// An RFC 3339 timestamp as `2026-11-25 10:00:00 UTC`; `—` when absent.
fn when(value: Option<String>) -> String {
    let Some(value) = value else {
        return "—".to_owned();
    };
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    OffsetDateTime::parse(&value, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or(value)
}

/// Render a template to a string.
pub fn render(name: &str, ctx: Value) -> Result<String, ApiError> {
    let env = ENVIRONMENT
        .as_ref()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("load page templates: {e:#}")))?;
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("render {name}: {e:#}")))
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::{render, when};

    #[test]
    fn every_template_loads_and_html_is_escaped() {
        let html = render(
            "error.html",
            context! { status => 404, title => "Not Found", code => "x", message => "<img src=x>\"'&" },
        )
        .unwrap();
        assert!(
            html.contains("&lt;img src=x&gt;&quot;&#x27;&amp;"),
            "{html}"
        );
        assert!(!html.contains("<img"));
    }

    #[test]
    fn timestamps_read_as_utc() {
        assert_eq!(
            when(Some("2026-11-25T11:00:00+01:00".into())),
            "2026-11-25 10:00:00 UTC"
        );
        assert_eq!(when(None), "—");
        assert_eq!(when(Some("yesterday".into())), "yesterday");
    }
}
