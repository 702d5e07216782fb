//! taskmesh-mesh: the App Mesh resource model, the mesh document, validation, and the
//! compiled, immutable route table the agent reads on every request.
