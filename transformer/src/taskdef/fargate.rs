//! Valid Fargate task sizes (reference/transformer-anchors §5.3; the ECS API doc and cfn-lint's
//! `fargate_cpu_memory.json` agree) and the smallest valid pair that fits a need.

/// Memory values (MiB) allowed for Fargate task cpu `cpu`, ascending; empty if `cpu` is invalid.
pub fn memory_options(cpu: u32) -> Vec<u32> {
    let range = |lo: u32, hi: u32, step: u32| (lo..=hi).step_by(step as usize).collect::<Vec<_>>();
    match cpu {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => Vec::new(),
    }
}

/// The valid Fargate cpu values, ascending.
pub const CPU_OPTIONS: [u32; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];

/// Whether `(cpu, memory)` is a valid Fargate task size.
pub fn is_valid(cpu: u32, memory: u32) -> bool {
    memory_options(cpu).contains(&memory)
}

/// The smallest valid pair (by cpu, then memory) with cpu ≥ `min_cpu` and memory ≥ `min_memory`.
pub fn smallest_fitting(min_cpu: u32, min_memory: u32) -> Option<(u32, u32)> {
    CPU_OPTIONS
        .iter()
        .filter(|&&c| c >= min_cpu)
        .find_map(|&c| {
            memory_options(c)
                .into_iter()
                .find(|&m| m >= min_memory)
                .map(|m| (c, m))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_ecs_documentation() {
        assert_eq!(memory_options(256), vec![512, 1024, 2048]);
        assert_eq!(memory_options(512), vec![1024, 2048, 3072, 4096]);
        assert_eq!(memory_options(1024).len(), 7);
        assert_eq!(memory_options(2048).last(), Some(&16384));
        assert_eq!(memory_options(4096).first(), Some(&8192));
        assert_eq!(memory_options(4096).last(), Some(&30720));
        assert_eq!(
            memory_options(8192),
            (16384..=61440).step_by(4096).collect::<Vec<_>>()
        );
        assert_eq!(memory_options(16384).last(), Some(&122880));
        assert!(memory_options(300).is_empty());
        assert!(is_valid(256, 512));
        assert!(!is_valid(256, 4096));
        assert!(!is_valid(512, 512));
    }

    #[test]
    fn smallest_pair_that_fits() {
        assert_eq!(smallest_fitting(256, 512), Some((256, 512)));
        assert_eq!(smallest_fitting(384, 576), Some((512, 1024)));
        assert_eq!(smallest_fitting(256, 3000), Some((512, 3072)));
        assert_eq!(smallest_fitting(1152, 2112), Some((2048, 4096)));
        assert_eq!(smallest_fitting(4096, 40000), Some((8192, 40960)));
        assert_eq!(smallest_fitting(16385, 1), None);
        assert_eq!(smallest_fitting(1, 200_000), None);
    }
}
