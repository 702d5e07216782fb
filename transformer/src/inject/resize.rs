//! Fargate sizing: after the sidecar is added, the task's cpu/memory must still be a valid
//! Fargate pair that holds every container. If not, raise it to the smallest valid pair that
//! fits (reference/transformer-anchors §5.3), report it as a [`Note`], and record the original
//! values in the proxy's docker labels so eject can restore them; with `--no-resize` it is an
//! error. Intrinsic sizes are opaque: nothing is read out of them, and the note says so.

use serde_json::{Map, Value};

use crate::error::{Location, Note, TransformError};
use crate::options::InjectOptions;
use crate::taskdef::naming::is_intrinsic;
use crate::taskdef::wiring::{self, ORIGINAL_CPU_LABEL, ORIGINAL_MEMORY_LABEL};
use crate::taskdef::{Casing, fargate, numbers};

/// Whether the task definition targets Fargate (`requiresCompatibilities` contains `FARGATE`).
pub fn is_fargate(td: &Map<String, Value>, c: Casing) -> bool {
    td.get(&c.k("requiresCompatibilities"))
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|v| {
                v.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("FARGATE"))
            })
        })
}

/// Sum of container cpu and memory (hard limit, else reservation) over literal containers;
/// `None` when a value is an intrinsic or unreadable.
pub fn container_sums(td: &Map<String, Value>, c: Casing) -> Option<(u64, u64)> {
    let mut cpu = 0u64;
    let mut mem = 0u64;
    for ctr in wiring::containers(td, c)? {
        if is_intrinsic(ctr) {
            return None;
        }
        let read = |k: &str| -> Option<Option<u64>> {
            match ctr.get(c.k(k)) {
                None => Some(None),
                Some(v) => numbers::int(v)
                    .and_then(|i| u64::try_from(i).ok())
                    .map(Some),
            }
        };
        cpu += read("cpu")?.unwrap_or(0);
        mem += read("memory")?.or(read("memoryReservation")?).unwrap_or(0);
    }
    Some((cpu, mem))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn same_type(original: &Value, n: u32) -> Value {
    match original {
        Value::Number(_) => Value::from(n),
        _ => Value::from(n.to_string()),
    }
}

/// What the containers about to be added need.
#[derive(Debug, Clone, Copy)]
pub struct Extra {
    /// CPU units.
    pub cpu: u64,
    /// MiB (their hard limits, else reservations).
    pub memory: u64,
    /// What they are, for messages: "the proxy", "the proxy and the X-Ray daemon".
    pub what: &'static str,
}

/// Make the Fargate task size hold its containers plus `extra` (the containers about to be
/// added). Returns the docker labels to put on the proxy.
pub fn fit(
    td: &mut Map<String, Value>,
    c: Casing,
    opts: &InjectOptions,
    extra: Extra,
    loc: &Location,
    notes: &mut Vec<Note>,
) -> Result<Vec<(String, String)>, TransformError> {
    let Extra {
        cpu: extra_cpu,
        memory: extra_memory,
        what,
    } = extra;
    if !is_fargate(td, c) {
        return Ok(Vec::new());
    }
    let (cpu_key, mem_key) = (c.k("cpu"), c.k("memory"));
    let (Some(cpu_v), Some(mem_v)) = (td.get(&cpu_key).cloned(), td.get(&mem_key).cloned()) else {
        notes.push(Note::new(
            loc,
            format!("Fargate task has no task-level {cpu_key}/{mem_key} (ECS requires both); size not checked"),
        ));
        return Ok(Vec::new());
    };
    let (Some(task_cpu), Some(task_mem)) =
        (numbers::task_cpu(&cpu_v), numbers::task_memory(&mem_v))
    else {
        let why = if is_intrinsic(&cpu_v) || is_intrinsic(&mem_v) {
            "an intrinsic function"
        } else {
            "not a number"
        };
        notes.push(Note::new(
            loc,
            format!(
                "task {cpu_key}/{mem_key} is {why}, so the Fargate size was not checked; make sure it leaves {extra_cpu} CPU units and {extra_memory} MiB for {what}"
            ),
        ));
        return Ok(Vec::new());
    };
    let Some((sum_cpu, sum_mem)) = container_sums(td, c) else {
        notes.push(Note::new(
            loc,
            format!(
                "a container's cpu/memory is an intrinsic function, so the Fargate size was not checked; make sure {cpu_key} {task_cpu} / {mem_key} {task_mem} leaves {extra_cpu} CPU units and {extra_memory} MiB for {what}"
            ),
        ));
        return Ok(Vec::new());
    };
    let (need_cpu, need_mem) = (sum_cpu + extra_cpu, sum_mem + extra_memory);
    if need_cpu <= u64::from(task_cpu) && need_mem <= u64::from(task_mem) {
        return Ok(Vec::new());
    }
    let min_cpu = u32::try_from(need_cpu.max(u64::from(task_cpu))).unwrap_or(u32::MAX);
    let min_mem = u32::try_from(need_mem.max(u64::from(task_mem))).unwrap_or(u32::MAX);
    let Some((new_cpu, new_mem)) = fargate::smallest_fitting(min_cpu, min_mem) else {
        return Err(TransformError::invalid(
            loc.with_field(&cpu_key),
            format!(
                "the containers plus {what} need {need_cpu} CPU units and {need_mem} MiB, more than the largest Fargate task size (16384 CPU units / 122880 MiB); reduce the containers' cpu/memory"
            ),
        ));
    };
    if !opts.resize {
        return Err(TransformError::invalid(
            loc.with_field(format!("{cpu_key}/{mem_key}")),
            format!(
                "the containers plus {what} need {need_cpu} CPU units and {need_mem} MiB, but the Fargate task has {cpu_key} {} / {mem_key} {}; the smallest valid Fargate size that fits is {new_cpu} / {new_mem}. Fix: set {cpu_key} to \"{new_cpu}\" and {mem_key} to \"{new_mem}\" (or larger), or drop --no-resize to let inject do it",
                text_of(&cpu_v),
                text_of(&mem_v)
            ),
        ));
    }
    let mut labels = Vec::new();
    if new_cpu != task_cpu {
        labels.push((ORIGINAL_CPU_LABEL.to_string(), text_of(&cpu_v)));
        td.insert(cpu_key.clone(), same_type(&cpu_v, new_cpu));
    }
    if new_mem != task_mem {
        labels.push((ORIGINAL_MEMORY_LABEL.to_string(), text_of(&mem_v)));
        td.insert(mem_key.clone(), same_type(&mem_v, new_mem));
    }
    notes.push(Note::new(
        loc,
        format!(
            "Fargate task size raised from {cpu_key} {} / {mem_key} {} to {cpu_key} {new_cpu} / {mem_key} {new_mem}, the smallest valid pair holding the containers plus {what} ({need_cpu} CPU units, {need_mem} MiB); the original is kept in the proxy's docker labels {ORIGINAL_CPU_LABEL}/{ORIGINAL_MEMORY_LABEL} and restored by eject",
            text_of(&cpu_v),
            text_of(&mem_v)
        ),
    ));
    Ok(labels)
}
