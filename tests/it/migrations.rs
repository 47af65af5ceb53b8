//! Replicas that start together on one PostgreSQL database migrate it once, one after the
//! other (`db::connect_and_migrate` holds an advisory lock), instead of racing on the DDL.

use sea_orm::{ConnectionTrait, Database, DbErr, Statement};
use sea_orm_migration::prelude::*;

/// A migration slow enough that unserialized replicas would overlap inside it.
struct SlowCreate;

impl MigrationName for SlowCreate {
    fn name(&self) -> &str {
        "m0001_slow_create"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SlowCreate {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("SELECT pg_sleep(0.3)").await?;
        // Not IF NOT EXISTS: a second run of this migration fails.
        db.execute_unprepared("CREATE TABLE replicas_ran (id BIGSERIAL PRIMARY KEY)")
            .await?;
        db.execute_unprepared("INSERT INTO replicas_ran DEFAULT VALUES")
            .await?;
        Ok(())
    }
}

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(SlowCreate)]
    }
}

/// Admin URL of the PostgreSQL server the tests create their databases on.
fn admin_url() -> String {
    std::env::var("ORDERMESH_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped when the test ends.
pub(crate) struct FreshDatabase {
    pub(crate) name: String,
    pub(crate) url: String,
}

impl FreshDatabase {
    pub(crate) async fn new() -> Self {
        let admin = Database::connect(&admin_url())
            .await
            .expect("PostgreSQL is needed for this test");
        let name = format!("om_test_migrate_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let admin = admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub(crate) async fn drop_it(self) {
        let admin = Database::connect(&admin_url()).await.unwrap();
        let _ = admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await;
        let _ = admin.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let db = FreshDatabase::new().await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(
                async move { ordermesh::data::db::connect_and_migrate::<Migrator>(&url).await },
            )
        })
        .collect();
    for s in starts {
        let conn = s.await.unwrap().expect("every replica starts");
        conn.close().await.unwrap();
    }
    let conn = ordermesh::data::db::connect(&db.url).await.unwrap();
    let count = |sql: &'static str| {
        let conn = conn.clone();
        async move {
            let row = conn
                .query_one(Statement::from_string(conn.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM replicas_ran").await, 1);
    assert_eq!(count("SELECT count(*) FROM seaql_migrations").await, 1);
    conn.close().await.unwrap();
    db.drop_it().await;
}
