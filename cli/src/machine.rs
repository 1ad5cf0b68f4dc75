//! What machine a table was measured on, named the way `/proc/cpuinfo` names
//! it (model name, family, model), so a reader can tell a Zen 4 from a Zen 5
//! without trusting anyone's prose.

/// The CPU as `/proc/cpuinfo` describes its first processor:
/// `"<model name> (family <f>, model <m>)"`, or `"unknown CPU"` where that file
/// is missing (not Linux) or lacks the fields.
pub fn cpu_description() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| describe(&text))
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// [`cpu_description`] from the text of `/proc/cpuinfo`.
fn describe(cpuinfo: &str) -> Option<String> {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let name = field("model name")?;
    match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => Some(format!("{name} (family {f}, model {m})")),
        _ => Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_family_and_model_of_the_first_processor() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n\
                    model\t\t: 2\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(describe(text).as_deref(), Some("AMD EPYC (family 26, model 2)"));
        assert_eq!(describe("flags: avx\n"), None);
    }
}
