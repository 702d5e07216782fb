//! taskmesh-e2e: shared support for the end-to-end tests (processes, moto server, namespaces).
