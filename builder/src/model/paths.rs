//! The path policy on a lab's service directories (issue 9 item 5): a
//! service's data and log directories are its own, never `/`, a system
//! directory or a parent of one, nor inside another service's directory.
//! The rule itself is the seed contract's ([`imgbuild_seed::paths`]), so the
//! agent applies exactly the same one to the seed it receives; here each
//! problem is reported at the lab field that has to change.

use imgbuild_seed::defaults;
use imgbuild_seed::paths::{problems, ServiceDir};

use super::lab::Lab;
use super::yaml::Ctx;

/// Checks every guest's service directories.
pub(crate) fn check(lab: &Lab, ctx: &mut Ctx) {
    for g in &lab.guests {
        // (lab field, directory); Spark's directories are fixed, so they come
        // first and a clash is reported at the object store's field.
        let mut dirs: Vec<(Option<&str>, ServiceDir<'_>)> = Vec::new();
        if g.roles.spark.is_some() {
            let spark = |what, path| {
                (
                    None,
                    ServiceDir {
                        service: "spark",
                        what,
                        path,
                    },
                )
            };
            dirs.push(spark("home", defaults::SPARK_HOME));
            dirs.push(spark("log_dir", defaults::SPARK_LOG_DIR));
            dirs.push(spark("work_dir", SPARK_WORK_DIR));
        }
        let drives: Vec<String>;
        if let Some(os) = &g.roles.object_store {
            let d = |field, what, path| {
                (
                    Some(field),
                    ServiceDir {
                        service: "object store",
                        what,
                        path,
                    },
                )
            };
            dirs.push(d("data_dir", "data_dir", os.data_dir.as_str()));
            dirs.push(d("log_dir", "log_dir", os.log_dir.as_str()));
            drives = if os.drives_per_guest > 1 {
                (1..=os.drives_per_guest)
                    .map(|i| format!("{}/drive{i}", os.data_dir))
                    .collect()
            } else {
                Vec::new()
            };
            dirs.extend(drives.iter().map(|p| d("data_dir", "volumes", p.as_str())));
        }
        let all: Vec<ServiceDir<'_>> = dirs.iter().map(|(_, d)| d.clone()).collect();
        let mut reported = Vec::new();
        for (i, msg) in problems(&all) {
            let field = dirs[i].0.unwrap_or("roles.spark");
            if reported.contains(&field) {
                continue;
            }
            reported.push(field);
            ctx.err(
                &format!("guests.{}.roles.object_store.{field}", g.name),
                msg,
            );
        }
    }
}

/// Spark's worker directory, `<SPARK_HOME>/work` (as the agent derives it).
const SPARK_WORK_DIR: &str = "/opt/spark/work";

#[cfg(test)]
mod tests {
    #[test]
    fn spark_work_dir_is_the_agents() {
        assert_eq!(
            super::SPARK_WORK_DIR,
            format!("{}/work", imgbuild_seed::defaults::SPARK_HOME)
        );
    }
}
