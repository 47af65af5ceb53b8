//! `order projections ...`: operator commands on the read models, run next to a serving
//! service against the same database (`DATABASE_URL`, default the local SQLite file).
//!
//! - `order projections list`: each projection, its position and the store's head.
//! - `order projections rebuild <name>`: builds the model into shadow tables from position 0
//!   while the live one serves, printing progress, then swaps them in.

use crate::projections;

const USAGE: &str = "usage: order projections list | order projections rebuild <name>";

/// Runs the command in `args` (after `projections`); returns the process exit code.
pub async fn projections(args: &[String]) -> i32 {
    match run(args).await {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("{msg}");
            code
        }
    }
}

async fn run(args: &[String]) -> Result<(), (i32, String)> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://var/order.db?mode=rwc".to_string());
    let connect = || async {
        ordermesh::data::db::connect_and_migrate::<crate::store::Migrator>(&url)
            .await
            .map_err(|e| (1, format!("DATABASE_URL: {e}")))
    };
    match args {
        [cmd] if cmd == "list" => {
            let db = connect().await?;
            let p = projections::projector(db.clone());
            p.create_tables().await.map_err(|e| (1, e.to_string()))?;
            let head = ordermesh::data::event_store::head_position(&db)
                .await
                .map_err(|e| (1, e.to_string()))?;
            for name in p.names() {
                let at = ordermesh::data::event_store::checkpoint::load(&db, name)
                    .await
                    .map_err(|e| (1, e.to_string()))?;
                println!("{name}\tposition {at}\thead {head}");
            }
            Ok(())
        }
        [cmd, name] if cmd == "rebuild" => {
            let db = connect().await?;
            let p = projections::projector(db);
            if !p.names().contains(&name.as_str()) {
                return Err((
                    2,
                    format!(
                        "no projection named '{name}' (known: {})",
                        p.names().join(", ")
                    ),
                ));
            }
            p.create_tables().await.map_err(|e| (1, e.to_string()))?;
            let started = std::time::Instant::now();
            let applied = p
                .rebuild(name, |at, head| {
                    let pct = if head > 0 {
                        at as f64 * 100.0 / head as f64
                    } else {
                        100.0
                    };
                    eprintln!("{name}: position {at} of {head} ({pct:.0}%)");
                })
                .await
                .map_err(|e| (1, e))?;
            println!(
                "{name}: rebuilt from {applied} events in {:.1}s and swapped in",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        _ => Err((2, USAGE.to_string())),
    }
}
