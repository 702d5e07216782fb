//! The nat table as `iptables-save -t nat` prints it, and the `iptables-restore --noflush`
//! batches that converge it to a plan or remove our part of it. Pure: text in, text out.
//!
//! Converging (`apply_batch`), in one transaction per family:
//! - each planned chain is declared (`:CHAIN - [0:0]`): created, or flushed if it exists;
//! - a rule jumping to one of our chains is kept only if it is the first one textually equal
//!   to a planned jump in the same chain; every other jump to our chains is deleted;
//! - our chains that the plan no longer has (ingress, when the app ports went away) are
//!   flushed and deleted;
//! - the planned rules are appended, except the kept jumps.
//!
//! So a second run with the same configuration leaves the table exactly as the first left it,
//! and a run with another configuration leaves exactly the new plan.

use super::plan::{OWN_CHAINS, Rule};

/// The parts of the nat table `proxy-init` looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    /// Every chain declared in the table (built-in and user-defined).
    pub chains: Vec<String>,
    /// Every rule, in order.
    pub rules: Vec<SavedRule>,
}

/// One `-A CHAIN spec` line of `iptables-save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// The chain the rule is in.
    pub chain: String,
    /// Everything after the chain name, exactly as printed (quotes included).
    pub spec: String,
    /// The `-j`/`-g` target, if any.
    pub target: Option<String>,
}

impl NatTable {
    /// Reads the `*nat` section of `iptables-save` output (other tables are ignored).
    pub fn parse(save_output: &str) -> NatTable {
        let mut table = NatTable::default();
        let mut in_nat = false;
        for line in save_output.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                in_nat = name == "nat";
            } else if line == "COMMIT" {
                in_nat = false;
            } else if !in_nat {
                continue;
            } else if let Some(declaration) = line.strip_prefix(':') {
                if let Some(chain) = declaration.split_whitespace().next() {
                    table.chains.push(chain.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                table.rules.push(SavedRule {
                    chain: chain.to_owned(),
                    spec: spec.trim().to_owned(),
                    target: target_of(spec),
                });
            }
        }
        table
    }

    /// Whether `chain` is declared.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }

    /// Rules outside our chains that jump to one of them.
    fn jumps_to_own(&self) -> impl Iterator<Item = &SavedRule> {
        self.rules
            .iter()
            .filter(|rule| !is_own(&rule.chain) && rule.target.as_deref().is_some_and(is_own))
    }
}

fn is_own(chain: &str) -> bool {
    OWN_CHAINS.contains(&chain)
}

/// The batch that converges `current` to `planned` (see the module docs).
pub fn apply_batch(planned: &[Rule], current: &NatTable) -> String {
    let planned_chains: Vec<&str> = planned
        .iter()
        .filter_map(|rule| match rule {
            Rule::NewChain(chain) => Some(*chain),
            Rule::Append { .. } => None,
        })
        .collect();

    // Which existing jumps stay: the first textual match of each planned jump.
    let mut kept = vec![false; current.rules.len()];
    let mut planned_jump_kept = vec![false; planned.len()];
    for (p, rule) in planned.iter().enumerate() {
        let Rule::Append { chain, spec } = rule else {
            continue;
        };
        if rule.jump_target().is_none() {
            continue;
        }
        let spec = spec.join(" ");
        if let Some(i) = current
            .rules
            .iter()
            .enumerate()
            .position(|(i, saved)| !kept[i] && saved.chain == *chain && saved.spec == spec)
        {
            kept[i] = true;
            planned_jump_kept[p] = true;
        }
    }

    let mut batch = String::from("*nat\n");
    for chain in &planned_chains {
        batch.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for (i, saved) in current.rules.iter().enumerate() {
        let jumps_to_own = !is_own(&saved.chain) && saved.target.as_deref().is_some_and(is_own);
        if jumps_to_own && !kept[i] {
            batch.push_str(&format!("-D {} {}\n", saved.chain, saved.spec));
        }
    }
    for chain in OWN_CHAINS {
        if current.has_chain(chain) && !planned_chains.contains(&chain) {
            batch.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
    }
    for (p, rule) in planned.iter().enumerate() {
        if let Rule::Append { chain, spec } = rule
            && !planned_jump_kept[p]
        {
            batch.push_str(&format!("-A {chain} {}\n", spec.join(" ")));
        }
    }
    batch.push_str("COMMIT\n");
    batch
}

/// The batch that removes our chains and every jump to them; `None` when there is none.
pub fn clean_batch(current: &NatTable) -> Option<String> {
    let mut body = String::new();
    for saved in current.jumps_to_own() {
        body.push_str(&format!("-D {} {}\n", saved.chain, saved.spec));
    }
    for chain in OWN_CHAINS {
        if current.has_chain(chain) {
            body.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
    }
    (!body.is_empty()).then(|| format!("*nat\n{body}COMMIT\n"))
}

/// The `-j`/`--jump`/`-g`/`--goto` target of a saved rule spec.
fn target_of(spec: &str) -> Option<String> {
    let words = split_words(spec);
    words
        .windows(2)
        .rev()
        .find(|pair| matches!(pair[0].as_str(), "-j" | "--jump" | "-g" | "--goto"))
        .map(|pair| pair[1].clone())
}

/// Splits like iptables-restore does: on blanks, keeping double-quoted words together.
fn split_words(spec: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut started = false;
    for c in spec.chars() {
        if escaped {
            word.push(c);
            escaped = false;
        } else if c == '\\' && in_quotes {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
            started = true;
        } else if c.is_whitespace() && !in_quotes {
            if started {
                words.push(std::mem::take(&mut word));
                started = false;
            }
        } else {
            word.push(c);
            started = true;
        }
    }
    if started {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_init::config::{Config, IngressConfig, Ipv6Mode};
    use crate::proxy_init::plan::{Family, plan};

    fn config(ingress: bool) -> Config {
        Config {
            ignored_uid: Some(1337),
            ignored_gid: None,
            proxy_egress_port: 15001,
            ingress: ingress.then(|| IngressConfig {
                proxy_ingress_port: 15000,
                app_ports: vec![9080],
            }),
            egress_ignored_ports: vec![],
            egress_ignored_ipv4: vec!["169.254.170.2".into(), "169.254.169.254".into()],
            egress_ignored_ipv6: vec![],
            ipv6: Ipv6Mode::Auto,
        }
    }

    const EMPTY: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Wed Nov 25 17:43:50 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
# Completed on Wed Nov 25 17:43:50 2026
";

    /// What iptables-save prints after the first run with `config(true)`.
    const INSTALLED: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [3:180]
:POSTROUTING ACCEPT [0:0]
:APPMESH_EGRESS - [0:0]
:APPMESH_INGRESS - [0:0]
-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS
-A OUTPUT -m comment --comment \"keep -j APPMESH_EGRESS\" -j ACCEPT
-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS
-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN
-A APPMESH_EGRESS -d 169.254.170.2/32 -p tcp -j RETURN
-A APPMESH_EGRESS -d 169.254.169.254/32 -p tcp -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001
-A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-ports 15000
COMMIT
";

    #[test]
    fn parses_chains_rules_and_targets() {
        let table = NatTable::parse(INSTALLED);
        assert!(table.has_chain("APPMESH_EGRESS") && table.has_chain("OUTPUT"));
        assert_eq!(table.rules.len(), 8);
        assert_eq!(table.rules[1].target.as_deref(), Some("ACCEPT"));
        assert_eq!(
            table.rules[1].spec,
            "-m comment --comment \"keep -j APPMESH_EGRESS\" -j ACCEPT"
        );
        assert_eq!(table.rules[2].target.as_deref(), Some("APPMESH_EGRESS"));
        assert_eq!(table.rules[6].target.as_deref(), Some("REDIRECT"));
        assert_eq!(
            table
                .jumps_to_own()
                .map(|r| r.chain.as_str())
                .collect::<Vec<_>>(),
            ["PREROUTING", "OUTPUT"]
        );
    }

    #[test]
    fn other_tables_are_ignored() {
        let text = "*mangle\n:APPMESH_INGRESS - [0:0]\n-A PREROUTING -j APPMESH_INGRESS\nCOMMIT\n";
        assert_eq!(NatTable::parse(text), NatTable::default());
    }

    #[test]
    fn first_run_declares_chains_and_appends_everything_in_order() {
        let rules = plan(&config(true), Family::Ipv4);
        assert_eq!(
            apply_batch(&rules, &NatTable::parse(EMPTY)),
            "*nat
:APPMESH_INGRESS - [0:0]
:APPMESH_EGRESS - [0:0]
-A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15000
-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS
-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN
-A APPMESH_EGRESS -p tcp -d 169.254.170.2,169.254.169.254 -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001
-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS
COMMIT
"
        );
    }

    #[test]
    fn second_run_keeps_the_jumps_and_refills_the_chains() {
        let rules = plan(&config(true), Family::Ipv4);
        assert_eq!(
            apply_batch(&rules, &NatTable::parse(INSTALLED)),
            "*nat
:APPMESH_INGRESS - [0:0]
:APPMESH_EGRESS - [0:0]
-A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15000
-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN
-A APPMESH_EGRESS -p tcp -d 169.254.170.2,169.254.169.254 -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001
COMMIT
"
        );
    }

    #[test]
    fn duplicate_and_foreign_jumps_are_removed() {
        let text = "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:APPMESH_EGRESS - [0:0]
:APPMESH_INGRESS - [0:0]
-A PREROUTING -p tcp -j APPMESH_INGRESS
-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS
-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS
-A OUTPUT -p udp -g APPMESH_EGRESS
COMMIT
";
        let rules = plan(&config(false), Family::Ipv4);
        assert_eq!(
            apply_batch(&rules, &NatTable::parse(text)),
            "*nat
:APPMESH_EGRESS - [0:0]
-D PREROUTING -p tcp -j APPMESH_INGRESS
-D OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS
-D OUTPUT -p udp -g APPMESH_EGRESS
-F APPMESH_INGRESS
-X APPMESH_INGRESS
-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN
-A APPMESH_EGRESS -p tcp -d 169.254.170.2,169.254.169.254 -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001
COMMIT
"
        );
    }

    #[test]
    fn clean_removes_jumps_then_chains_and_nothing_else() {
        assert_eq!(
            clean_batch(&NatTable::parse(INSTALLED)).as_deref(),
            Some(
                "*nat
-D PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS
-D OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS
-F APPMESH_INGRESS
-X APPMESH_INGRESS
-F APPMESH_EGRESS
-X APPMESH_EGRESS
COMMIT
"
            )
        );
        assert_eq!(clean_batch(&NatTable::parse(EMPTY)), None);
    }

    #[test]
    fn words_keep_quoted_text_together() {
        assert_eq!(
            split_words(r#"-m comment --comment "a \"b\" c" -j X"#),
            ["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]
        );
        assert_eq!(
            split_words(r#"--comment "" -j X"#),
            ["--comment", "", "-j", "X"]
        );
    }
}
