//! Alerting: rules (PromQL, log-count, span and generated SLO burn-rate
//! rules; Prometheus rule files), their evaluation and alert lifecycle
//! (`state`), templates, notification (`notify`: routing, grouping,
//! inhibition, silences; `channels`: webhook, Slack, email delivery with
//! retries) and the service that runs it all (`service`).

pub mod channels;
pub mod eval;
pub mod notify;
pub mod rules;
pub mod service;
pub mod state;
pub mod template;
pub mod time;

#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
pub(crate) mod tests;

use crate::storage::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// A rule file or rule definition is invalid.
    #[error("{0}")]
    InvalidRule(String),
    /// Any other invalid definition or parameter.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A bound (rules, silences, channels) would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Meta(#[from] MetaError),
    #[error("alerting is disabled")]
    Disabled,
    #[error("{0}")]
    Internal(String),
}

impl AlertingError {
    pub fn code(&self) -> &'static str {
        match self {
            AlertingError::InvalidRule(_) => "bad_rule",
            AlertingError::InvalidRequest(_) => "bad_request",
            AlertingError::NotFound(_) => "not_found",
            AlertingError::LimitExceeded(_) => "limit_exceeded",
            AlertingError::Meta(e) => e.code(),
            AlertingError::Disabled => "alerting_disabled",
            AlertingError::Internal(_) => "internal",
        }
    }
}
