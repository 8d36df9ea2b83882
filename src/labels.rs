//! Labels the manager puts on the containers it creates, so that a restarted
//! manager finds what it left (and tests can clean up by run). Shared by the
//! sandbox layer and the package builder, neither of which owns them.

/// The function a container serves.
pub const LABEL_FUNCTION: &str = "openlambda.function";
/// The sandbox id (also the sandbox directory's name).
pub const LABEL_SANDBOX: &str = "openlambda.sandbox";
/// The manager instance that created the container.
pub const LABEL_INSTANCE: &str = "openlambda.instance";
/// The function's code version.
pub const LABEL_VERSION: &str = "openlambda.version";
/// On generic prewarmed containers: the runtime they run.
pub const LABEL_PREWARMED: &str = "openlambda.prewarmed";
