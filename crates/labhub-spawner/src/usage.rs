//! Reading the engine's numbers: CPU and memory from a stats sample, volume sizes from `/system/df`.

use std::collections::HashMap;

use bollard::models::ContainerStatsResponse;

/// CPU in use, in millicores: the container's share of the host's CPU time between the
/// sample and the one before it, times the CPUs online (what `docker stats` shows as %/100).
pub(crate) fn cpu_millis(stats: &ContainerStatsResponse) -> u32 {
    let total = |s: &Option<bollard::models::ContainerCpuStats>| {
        s.as_ref().and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0)
    };
    let system =
        |s: &Option<bollard::models::ContainerCpuStats>| s.as_ref().and_then(|c| c.system_cpu_usage).unwrap_or(0);
    let cpu_delta = total(&stats.cpu_stats).saturating_sub(total(&stats.precpu_stats));
    let system_delta = system(&stats.cpu_stats).saturating_sub(system(&stats.precpu_stats));
    if cpu_delta == 0 || system_delta == 0 {
        return 0;
    }
    let online = stats
        .cpu_stats
        .as_ref()
        .and_then(|c| {
            c.online_cpus
                .filter(|&n| n > 0)
                .or_else(|| c.cpu_usage.as_ref()?.percpu_usage.as_ref().map(|p| p.len() as u32))
        })
        .unwrap_or(1);
    let cores = cpu_delta as f64 / system_delta as f64 * f64::from(online);
    (cores * 1000.0).round().min(f64::from(u32::MAX)) as u32
}

/// Memory in use, in bytes, without the page cache the kernel can take back (as `docker
/// stats` reports it): cgroup v1 names it `total_inactive_file`, v2 `inactive_file`.
pub(crate) fn memory_bytes(stats: &ContainerStatsResponse) -> u64 {
    let Some(mem) = stats.memory_stats.as_ref() else {
        return 0;
    };
    let usage = mem.usage.unwrap_or(0);
    let cache = mem
        .stats
        .as_ref()
        .and_then(|s| s.get("total_inactive_file").or_else(|| s.get("inactive_file")).copied())
        .unwrap_or(0);
    if cache < usage { usage - cache } else { usage }
}

/// Volume name → bytes used, from a `/system/df` answer. Engines before API 1.52 list
/// volumes under `Volumes`, later ones under `VolumeUsage.Items`; a size of -1 (not
/// computed) is left out.
pub(crate) fn volume_sizes(df: &serde_json::Value) -> HashMap<String, u64> {
    let old = df.get("Volumes").and_then(|v| v.as_array());
    let new = df.get("VolumeUsage").and_then(|v| v.get("Items")).and_then(|v| v.as_array());
    old.into_iter()
        .chain(new)
        .flatten()
        .filter_map(|v| {
            let name = v.get("Name")?.as_str()?;
            let size = v.get("UsageData")?.get("Size")?.as_i64()?;
            Some((name.to_string(), u64::try_from(size).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_from_deltas() {
        let stats: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000u64}, "system_cpu_usage": 18_000_000_000u64}
        }))
        .unwrap();
        // 0.5 s of CPU over 2 s of (2-CPU) system time: a quarter of the machine, half a core.
        assert_eq!(cpu_millis(&stats), 500);
        assert_eq!(cpu_millis(&ContainerStatsResponse::default()), 0);
    }

    #[test]
    fn memory_without_cache() {
        let v1: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 300, "cache": 400}}
        }))
        .unwrap();
        assert_eq!(memory_bytes(&v1), 700);
        let v2: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "memory_stats": {"usage": 1000, "stats": {"inactive_file": 100}}
        }))
        .unwrap();
        assert_eq!(memory_bytes(&v2), 900);
    }

    #[test]
    fn df_in_both_shapes() {
        let old = serde_json::json!({"Volumes": [
            {"Name": "a", "UsageData": {"Size": 42, "RefCount": 1}},
            {"Name": "b", "UsageData": {"Size": -1, "RefCount": 0}}
        ]});
        assert_eq!(volume_sizes(&old), HashMap::from([("a".to_string(), 42)]));
        let new =
            serde_json::json!({"VolumeUsage": {"Items": [{"Name": "c", "UsageData": {"Size": 7, "RefCount": 0}}]}});
        assert_eq!(volume_sizes(&new), HashMap::from([("c".to_string(), 7)]));
    }
}
