//! The namespaces whose experiments the controller may make pods, Secrets and NetworkPolicies
//! in: the chart's choice (a Role in each), or every namespace when it grants a ClusterRole.
//! Experiments are still watched everywhere, so one applied elsewhere is told why it waits.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Namespaces {
    #[default]
    All,
    Only(BTreeSet<String>),
}

impl Namespaces {
    /// `*` for every namespace, else names separated by commas.
    pub fn parse(list: &str) -> Result<Self, String> {
        let names: BTreeSet<String> = list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        if names.contains("*") {
            return if names.len() == 1 {
                Ok(Self::All)
            } else {
                Err(format!(
                    "experiment namespaces {list:?}: `*` (every namespace) stands alone"
                ))
            };
        }
        if names.is_empty() {
            return Err(
                "experiment namespaces: name at least one, or `*` for every namespace".to_string(),
            );
        }
        if let Some(bad) = names.iter().find(|name| !is_dns_label(name)) {
            return Err(format!(
                "experiment namespaces: {bad:?} is not a namespace name (lower-case letters, \
                 digits and '-', at most 63)"
            ));
        }
        Ok(Self::Only(names))
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(namespace),
        }
    }

    /// Why an experiment in `namespace` waits, naming the setting that would change it.
    pub fn refusal(&self, namespace: &str) -> String {
        let allowed = match self {
            Self::All => return String::new(),
            Self::Only(names) => names.iter().cloned().collect::<Vec<_>>().join(", "),
        };
        format!(
            "this controller may run experiments only in namespace(s) {allowed}, not in \
             {namespace}: apply it there, or add {namespace} to the chart's \
             experimentNamespaces (a Role there), or set it to [\"*\"]"
        )
    }
}

fn is_dns_label(name: &str) -> bool {
    name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_allows_its_names_and_a_star_every_namespace() {
        let lab = Namespaces::parse(" lab, perf ,").unwrap();
        assert!(lab.allows("lab") && lab.allows("perf"));
        assert!(!lab.allows("default"));
        assert_eq!(Namespaces::parse("*").unwrap(), Namespaces::All);
        assert!(Namespaces::All.allows("anything"));
    }

    #[test]
    fn nonsense_is_refused_with_why() {
        for (list, says) in [
            ("", "at least one"),
            (" , ", "at least one"),
            ("*,lab", "stands alone"),
            ("Lab", "not a namespace name"),
            ("-lab", "not a namespace name"),
        ] {
            let error = Namespaces::parse(list).unwrap_err();
            assert!(error.contains(says), "{list:?}: {error}");
        }
    }

    #[test]
    fn the_refusal_names_what_is_allowed_and_what_to_set() {
        let message = Namespaces::parse("lab").unwrap().refusal("default");
        assert!(message.contains("only in namespace(s) lab, not in default"));
        assert!(message.contains("experimentNamespaces"));
    }
}
