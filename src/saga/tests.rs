//! The engine against a real SQLite database, with steps that succeed, refuse or flake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::DatabaseConnection;

use serde::Serialize;

use super::*;

struct TestMigrator;

#[async_trait::async_trait]
impl sea_orm_migration::MigratorTrait for TestMigrator {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![Box::new(crate::data::event_store::Migration)]
    }
}

#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    Reject,
    /// Fails transiently this many times, then succeeds.
    Flaky(u32),
    /// Fails transiently every time.
    Down,
}

struct Probe {
    name: &'static str,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<String>>>,
    failures: Mutex<u32>,
}

#[derive(Serialize, serde::Deserialize, Default)]
struct Data {
    done: Vec<String>,
}

#[async_trait::async_trait]
impl Step<Data> for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn action(&self, data: &mut Data, key: &str) -> Result<(), StepError> {
        self.log.lock().unwrap().push(format!("do {key}"));
        match self.behaviour {
            Behaviour::Succeed => {}
            Behaviour::Reject => return Err(StepError::Rejected("no".into())),
            Behaviour::Down => return Err(StepError::Transient("unavailable".into())),
            Behaviour::Flaky(n) => {
                let mut f = self.failures.lock().unwrap();
                if *f < n {
                    *f += 1;
                    return Err(StepError::Transient("busy".into()));
                }
            }
        }
        data.done.push(self.name.to_string());
        Ok(())
    }

    async fn compensate(&self, _data: &mut Data, key: &str) -> Result<(), StepError> {
        self.log.lock().unwrap().push(format!("undo {key}"));
        Ok(())
    }

    fn has_compensation(&self) -> bool {
        true
    }

    fn retry(&self) -> StepRetry {
        StepRetry {
            budget: Some(Duration::from_millis(300)),
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..StepRetry::default()
        }
    }
}

fn saga(behaviours: &[(&'static str, Behaviour)], log: &Arc<Mutex<Vec<String>>>) -> Saga<Data> {
    Saga {
        kind: "test",
        steps: behaviours
            .iter()
            .map(|(name, b)| {
                Arc::new(Probe {
                    name,
                    behaviour: *b,
                    log: log.clone(),
                    failures: Mutex::new(0),
                }) as Arc<dyn Step<Data>>
            })
            .collect(),
        stream_of: own_stream,
    }
}

async fn start(db: &DatabaseConnection, s: &Saga<Data>, id: &str) {
    let txn = sea_orm::TransactionTrait::begin(db).await.unwrap();
    s.start_in(&txn, id, &Data::default()).await.unwrap();
    txn.commit().await.unwrap();
}

fn writer(db: &DatabaseConnection) -> crate::data::group_commit::GroupCommit {
    crate::data::group_commit::GroupCommit::new(db.clone(), "saga-test")
}

async fn db() -> DatabaseConnection {
    crate::data::db::connect_and_migrate::<TestMigrator>("sqlite::memory:")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rejected_step_compensates_in_reverse() {
    let db = db().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let s = saga(
        &[
            ("a", Behaviour::Succeed),
            ("b", Behaviour::Flaky(2)),
            ("c", Behaviour::Reject),
            ("d", Behaviour::Succeed),
        ],
        &log,
    );
    start(&db, &s, "s1").await;
    let out = s.run_new(&writer(&db), "s1").await.unwrap();
    assert_eq!(
        out,
        Outcome::Compensated {
            step: "c".into(),
            reason: "c: no".into()
        }
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "do s1/a",
            "do s1/b",
            "do s1/b",
            "do s1/b",
            "do s1/c",
            "undo s1/c/undo",
            "undo s1/b/undo",
            "undo s1/a/undo"
        ]
    );
    let steps = s.steps(&db, "s1").await.unwrap();
    let statuses: Vec<(&str, &str, i32)> = steps
        .iter()
        .map(|r| (r.name.as_str(), r.status.as_str(), r.attempts))
        .collect();
    assert_eq!(
        statuses,
        [
            ("a", "COMPENSATED", 2),
            ("b", "COMPENSATED", 4),
            ("c", "COMPENSATED", 2),
        ]
    );
    assert!(s.unfinished(&db).await.unwrap().is_empty());
    // Running a finished saga again changes nothing.
    assert!(matches!(
        s.run(&writer(&db), "s1").await.unwrap(),
        Outcome::Compensated { .. }
    ));
}

#[tokio::test]
async fn a_resumed_saga_continues_where_it_stopped() {
    let db = db().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let s = saga(
        &[("a", Behaviour::Succeed), ("b", Behaviour::Succeed)],
        &log,
    );
    start(&db, &s, "s2").await;
    // As if the process died after step a succeeded: its success is recorded, b not started.
    let done = SagaEvent::SagaStepSucceeded {
        step: 0,
        data: r#"{"done":["a"]}"#.into(),
    };
    let txn = sea_orm::TransactionTrait::begin(&db).await.unwrap();
    crate::data::event_store::append(
        &txn,
        "s2",
        crate::data::event_store::Expected::Exact(2),
        &[done.to_new()],
        &Default::default(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(s.unfinished(&db).await.unwrap(), ["s2"]);
    assert_eq!(s.run(&writer(&db), "s2").await.unwrap(), Outcome::Completed);
    assert_eq!(log.lock().unwrap().clone(), ["do s2/b"]);
    let inst = s.state(&db, "s2").await.unwrap().unwrap();
    assert_eq!(inst.data, r#"{"done":["a","b"]}"#);
    assert_eq!(inst.state, InstanceState::Completed);
    assert!(s.unfinished(&db).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_step_that_stays_unavailable_is_retried_for_its_budget_then_turns_back() {
    let db = db().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let s = saga(&[("a", Behaviour::Succeed), ("b", Behaviour::Down)], &log);
    start(&db, &s, "s3").await;
    let started = std::time::Instant::now();
    let out = s.run_new(&writer(&db), "s3").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "gave up before its budget: {:?}",
        started.elapsed()
    );
    assert_eq!(
        out,
        Outcome::Compensated {
            step: "b".into(),
            reason: "b: unavailable".into()
        }
    );
    let attempts = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.as_str() == "do s3/b")
        .count();
    assert!(attempts > 3, "retried within the budget: {attempts}");
}
