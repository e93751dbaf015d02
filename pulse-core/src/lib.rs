//! pulse-core — the shared vocabulary of Pulse services.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod body;
pub mod error;
pub mod headers;
#[cfg(feature = "health")]
pub mod health;
pub mod identity;
pub mod rbac;
pub mod request_id;

pub use body::ResponseBody;
pub use error::{ApiError, ErrorCode};
pub use identity::Identity;
pub use rbac::{AuthorizeLayer, RequirePermissionLayer, RoleMap, RuleTable};
pub use request_id::{RequestId, RequestIdLayer, SetRequestIdLayer};
