//! Numbers as real inputs write them: `512`, `"512"`, `"0.5 vCPU"`, `"1 vcpu"`, `"1GB"`,
//! `"2 GiB"`. Intrinsics and anything else unreadable give `None` (callers say so).

use serde_json::Value;

/// An integer written as a JSON number or a decimal string (`"500"`).
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Task-level cpu in CPU units: `1024`, `"1024"`, `"1 vCPU"`, `"0.5 vcpu"`.
pub fn task_cpu(v: &Value) -> Option<u32> {
    if let Some(i) = int(v) {
        return u32::try_from(i).ok();
    }
    let s = v.as_str()?.trim().to_ascii_lowercase();
    let num = s.strip_suffix("vcpu")?.trim();
    scaled(num, 1024.0)
}

/// Task-level memory in MiB: `512`, `"512"`, `"1GB"`, `"1 gb"`, `"2 GiB"`, `"512 MiB"`, `"512MB"`.
pub fn task_memory(v: &Value) -> Option<u32> {
    if let Some(i) = int(v) {
        return u32::try_from(i).ok();
    }
    let s = v.as_str()?.trim().to_ascii_lowercase();
    for (suffix, factor) in [("gib", 1024.0), ("gb", 1024.0), ("mib", 1.0), ("mb", 1.0)] {
        if let Some(num) = s.strip_suffix(suffix) {
            return scaled(num.trim(), factor);
        }
    }
    None
}

/// Container-level `cpu`, `memory` and `memoryReservation` written as decimal strings (as in
/// the App Mesh docs' examples) become integers, as the ECS API requires. Used on API-shape
/// output only; CloudFormation values are left as written.
pub fn normalise_container_numbers(td: &mut serde_json::Map<String, Value>) {
    let Some(Value::Array(list)) = td.get_mut("containerDefinitions") else {
        return;
    };
    for ctr in list.iter_mut().filter_map(Value::as_object_mut) {
        for key in ["cpu", "memory", "memoryReservation"] {
            if let Some(v) = ctr.get_mut(key)
                && let (Value::String(_), Some(i)) = (&*v, int(v))
            {
                *v = Value::from(i);
            }
        }
    }
}

fn scaled(num: &str, factor: f64) -> Option<u32> {
    let f: f64 = num.parse().ok()?;
    let v = f * factor;
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_numbers_as_written() {
        assert_eq!(int(&json!(500)), Some(500));
        assert_eq!(int(&json!("500")), Some(500));
        assert_eq!(int(&json!(" 32 ")), Some(32));
        assert_eq!(int(&json!({"Ref": "Cpu"})), None);
        assert_eq!(int(&json!("x")), None);
        assert_eq!(task_cpu(&json!("0.5 vCPU")), Some(512));
        assert_eq!(task_cpu(&json!("1 vcpu")), Some(1024));
        assert_eq!(task_cpu(&json!(".25 vCPU")), Some(256));
        assert_eq!(task_cpu(&json!("256")), Some(256));
        assert_eq!(task_memory(&json!("1GB")), Some(1024));
        assert_eq!(task_memory(&json!("2 GiB")), Some(2048));
        assert_eq!(task_memory(&json!("512 MiB")), Some(512));
        assert_eq!(task_memory(&json!("0.5GB")), Some(512));
        assert_eq!(task_memory(&json!(3072)), Some(3072));
        assert_eq!(task_memory(&json!("lots")), None);
        assert_eq!(task_cpu(&json!("0.3333 vCPU")), None);
    }

    #[test]
    fn container_numbers_become_integers() {
        let mut td = json!({"containerDefinitions": [{"cpu": "32", "memory": "500", "memoryReservation": " 256 ", "image": "x"}, {"memory": "lots"}]});
        normalise_container_numbers(td.as_object_mut().unwrap());
        assert_eq!(
            td,
            json!({"containerDefinitions": [{"cpu": 32, "memory": 500, "memoryReservation": 256, "image": "x"}, {"memory": "lots"}]})
        );
    }
}
