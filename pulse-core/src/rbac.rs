//! Role-based access control: dotted permission names with whole-segment wildcards.

/// Whether `grant` covers `permission`.
///
/// Both are dotted names. A grant segment `*` matches exactly one or more whole
/// trailing segments when it is the grant's last segment, so `etl.*` grants
/// `etl.jobs.run` and `etl.read`, but not `etl` itself nor `etlx.read`; `*` alone
/// grants everything. A `*` anywhere else matches exactly one segment. Empty names
/// and empty segments never match.
///
/// ```
/// use pulse_core::rbac::grants;
/// assert!(grants("etl.*", "etl.jobs.run"));
/// assert!(!grants("etl.*", "etl"));
/// assert!(!grants("etl.*", "etlx.read"));
/// assert!(grants("*", "anything.at.all"));
/// ```
pub fn grants(grant: &str, permission: &str) -> bool {
    if permission.is_empty() || permission.split('.').any(str::is_empty) {
        return false;
    }
    let mut wanted = permission.split('.');
    let mut segments = grant.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return false;
        }
        let is_last = segments.peek().is_none();
        match wanted.next() {
            None => return false,
            Some(_) if segment == "*" && is_last => return true,
            Some(_) if segment == "*" => {}
            Some(w) if w == segment => {}
            Some(_) => return false,
        }
    }
    wanted.next().is_none()
}
