//! Which virtual node an agent is: parsed from `APPMESH_RESOURCE_ARN` /
//! `APPMESH_VIRTUAL_NODE_NAME` (`mesh/<mesh>/virtualNode/<node>` or the full ARN).

use std::fmt;

/// A virtual node of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub mesh: String,
    pub node: String,
}

/// Why a node reference did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "\"{input}\" is not a virtual node reference (expected mesh/<mesh>/virtualNode/<node> or \
         arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<node>): {reason}"
)]
pub struct NodeRefError {
    pub input: String,
    pub reason: &'static str,
}

impl NodeRef {
    /// `"mesh/<mesh>/virtualNode/<node>"` or
    /// `"arn:aws:appmesh:<region>:<acct>:mesh/<mesh>/virtualNode/<node>"` (any partition, also
    /// `appmesh-preview`); the mesh may be `"<mesh>@<owner>"`, the owner is dropped.
    pub fn parse(s: &str) -> Result<NodeRef, NodeRefError> {
        let err = |reason| NodeRefError {
            input: s.to_owned(),
            reason,
        };
        let trimmed = s.trim();
        let resource = if let Some(rest) = trimmed.strip_prefix("arn:") {
            // arn:<partition>:<service>:<region>:<account>:<resource>
            let mut parts = rest.splitn(5, ':');
            let _partition = parts.next();
            let service = parts.next().ok_or_else(|| err("truncated ARN"))?;
            if service != "appmesh" && service != "appmesh-preview" {
                return Err(err("the ARN is not an App Mesh ARN"));
            }
            let _region = parts.next().ok_or_else(|| err("truncated ARN"))?;
            let _account = parts.next().ok_or_else(|| err("truncated ARN"))?;
            parts.next().ok_or_else(|| err("truncated ARN"))?
        } else {
            trimmed
        };
        let mut segs = resource.split('/');
        let (Some("mesh"), Some(mesh), Some("virtualNode"), Some(node), None) = (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        ) else {
            return Err(err(
                "expected the resource part mesh/<mesh>/virtualNode/<node>",
            ));
        };
        let mesh = mesh.split_once('@').map_or(mesh, |(m, _owner)| m);
        if mesh.is_empty() {
            return Err(err("empty mesh name"));
        }
        if node.is_empty() {
            return Err(err("empty virtual node name"));
        }
        Ok(NodeRef {
            mesh: mesh.to_owned(),
            node: node.to_owned(),
        })
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mesh/{}/virtualNode/{}", self.mesh, self.node)
    }
}

impl std::str::FromStr for NodeRef {
    type Err = NodeRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_drops_the_owner() {
        let want = NodeRef {
            mesh: "apps".into(),
            node: "serviceb-v1".into(),
        };
        assert_eq!(
            NodeRef::parse("mesh/apps/virtualNode/serviceb-v1").unwrap(),
            want
        );
        assert_eq!(
            NodeRef::parse(
                "arn:aws:appmesh:us-west-2:111122223333:mesh/apps/virtualNode/serviceb-v1"
            )
            .unwrap(),
            want
        );
        assert_eq!(
            NodeRef::parse("mesh/apps@111122223333/virtualNode/serviceb-v1").unwrap(),
            want
        );
        assert_eq!(
            NodeRef::parse(
                "arn:aws-cn:appmesh-preview:cn-north-1:1:mesh/apps@1/virtualNode/serviceb-v1"
            )
            .unwrap(),
            want
        );
        assert_eq!(want.to_string(), "mesh/apps/virtualNode/serviceb-v1");
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "",
            "serviceb-v1",
            "mesh/apps/virtualRouter/r",
            "mesh//virtualNode/n",
            "mesh/apps/virtualNode/",
            "mesh/apps/virtualNode/n/extra",
            "arn:aws:ecs:us-west-2:1:mesh/apps/virtualNode/n",
            "arn:aws:appmesh:us-west-2",
        ] {
            let err = NodeRef::parse(bad).unwrap_err();
            assert_eq!(err.input, bad);
            assert!(err.to_string().contains("not a virtual node reference"));
        }
    }
}
