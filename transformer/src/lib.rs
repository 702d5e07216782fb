//! taskmesh: rewrites Amazon ECS task definitions so their tasks join the mesh.
