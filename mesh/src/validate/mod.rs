//! Validation of a whole mesh document: every problem is collected with its path, none stops
//! the others. Covers dangling references (service provider, route → router, weighted target →
//! node, backends), duplicate names, the App Mesh model constraints (weights 0–100 and ≤ 10
//! targets, priority 0–1000, ≤ 10 header / query / metadata matches, ports 1–65535, exactly one
//! route kind, route kind vs. router listener protocol, regexes that compile, …). Adjustable
//! service quotas (e.g. 50 routes per router) are deliberately not enforced.

mod nodes;
mod routes;

use std::collections::HashMap;

use crate::document::{MeshDocument, Problem, join};
use crate::model::VirtualServiceProvider;

/// Every problem of `doc` (empty = valid).
pub(crate) fn validate(doc: &MeshDocument) -> Vec<Problem> {
    let mut v = Validator {
        doc,
        problems: Vec::new(),
    };
    v.mesh();
    v.services();
    v.routers();
    routes::check(&mut v);
    nodes::check(&mut v);
    v.problems
}

pub(crate) struct Validator<'d> {
    pub doc: &'d MeshDocument,
    pub problems: Vec<Problem>,
}

impl Validator<'_> {
    pub fn push(&mut self, path: String, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn mesh(&mut self) {
        let name = self.doc.mesh_name();
        if !name.is_empty() {
            check_name(self, "meshName".into(), name, "mesh name");
        }
    }

    /// Reports duplicates among `names` (each with its origin).
    fn duplicates<'a>(
        &mut self,
        what: &str,
        key: &str,
        names: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (name, origin) in names {
            if let Some(first) = seen.get(name) {
                self.push(
                    join(origin, key),
                    format!("duplicate {what} \"{name}\" (first at {first})"),
                );
            } else {
                seen.insert(name, origin);
            }
        }
    }

    fn services(&mut self) {
        let doc = self.doc;
        let o = &doc.origins().virtual_services;
        self.duplicates(
            "virtual service",
            "virtualServiceName",
            doc.virtual_services()
                .iter()
                .zip(o)
                .map(|(s, o)| (s.virtual_service_name.as_str(), o.as_str())),
        );
        for (s, o) in doc.virtual_services().iter().zip(o) {
            if s.virtual_service_name.is_empty() {
                self.push(join(o, "virtualServiceName"), "must not be empty");
            }
            match &s.spec.provider {
                Some(VirtualServiceProvider::VirtualNode(p))
                    if doc.virtual_node(&p.virtual_node_name).is_none() =>
                {
                    self.push(
                        join(o, "spec.provider.virtualNode.virtualNodeName"),
                        self.no_such("virtual node", &p.virtual_node_name),
                    );
                }
                Some(VirtualServiceProvider::VirtualRouter(p))
                    if doc.virtual_router(&p.virtual_router_name).is_none() =>
                {
                    self.push(
                        join(o, "spec.provider.virtualRouter.virtualRouterName"),
                        self.no_such("virtual router", &p.virtual_router_name),
                    );
                }
                _ => {}
            }
        }
    }

    fn routers(&mut self) {
        let doc = self.doc;
        let o = &doc.origins().virtual_routers;
        self.duplicates(
            "virtual router",
            "virtualRouterName",
            doc.virtual_routers()
                .iter()
                .zip(o)
                .map(|(r, o)| (r.virtual_router_name.as_str(), o.as_str())),
        );
        for (r, o) in doc.virtual_routers().iter().zip(o) {
            check_name(
                self,
                join(o, "virtualRouterName"),
                &r.virtual_router_name,
                "name",
            );
            if r.spec.listeners.is_empty() {
                self.push(
                    join(o, "spec.listeners"),
                    "a virtual router needs at least one listener",
                );
            }
            let mut ports: HashMap<u32, usize> = HashMap::new();
            for (i, l) in r.spec.listeners.iter().enumerate() {
                let path = join(o, &format!("spec.listeners[{i}].portMapping.port"));
                check_port(self, path.clone(), l.port_mapping.port);
                if let Some(first) = ports.insert(l.port_mapping.port, i) {
                    self.push(
                        path,
                        format!(
                            "port {} already used by listeners[{first}]",
                            l.port_mapping.port
                        ),
                    );
                }
            }
        }
    }

    pub fn no_such(&self, what: &str, name: &str) -> String {
        format!("no {what} \"{name}\" in mesh \"{}\"", self.doc.mesh_name())
    }
}

/// Names: 1–255 characters.
pub(crate) fn check_name(v: &mut Validator<'_>, path: String, name: &str, what: &str) {
    if name.is_empty() {
        v.push(path, format!("{what} must not be empty"));
    } else if name.chars().count() > 255 {
        v.push(path, format!("{what} is longer than 255 characters"));
    }
}

/// Ports: 1–65535.
pub(crate) fn check_port(v: &mut Validator<'_>, path: String, port: u32) {
    if !(1..=65535).contains(&port) {
        v.push(path, format!("port must be 1–65535, found {port}"));
    }
}
