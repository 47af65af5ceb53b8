//! Redelivery: a poison event is dead-lettered, one not ready yet is applied once later.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_after_max_attempts_and_later_events_flow() {
    let vhost = TestVhost::new().await;
    let effects = Effects {
        poison_order: Some("ord-poison".into()),
        ..Default::default()
    };
    let group = Group::start(&vhost, "audit", &[], effects).await;
    let mut producer = Producer::start(&vhost).await;

    ship(&mut producer.client, "ord-1", 1).await;
    ship(&mut producer.client, "ord-poison", 0).await;
    ship(&mut producer.client, "ord-2", 2).await;
    let rows = producer.all_published().await;
    let poison = rows
        .iter()
        .find(|r| {
            r.event_type == "ShipmentCreated"
                && prost::Message::decode(r.payload.as_slice())
                    .map(|e: ev::EventEnvelope| order_of(&e) == "ord-poison")
                    .unwrap_or(false)
        })
        .expect("the poison event")
        .event_id
        .clone();

    let queue = group.sub.dead_letter_queue();
    let deadline = Instant::now() + PATIENCE;
    let mut dead = Vec::new();
    while dead.is_empty() && Instant::now() < deadline {
        dead.extend(vhost.take_all(&queue).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, poison);
    assert_eq!(
        group.effects.calls(&poison),
        MAX_ATTEMPTS,
        "tries before the dead-letter queue"
    );

    // Every other event is applied, after as well as before the poison one.
    let others = rows.len() - 1;
    assert!(
        eventually(PATIENCE, || async {
            group.effects.applied().len() >= others
        })
        .await
    );
    // And the poison event stayed the only dead letter.
    let later = vhost.take_all(&queue).await;
    assert!(later.is_empty(), "more dead letters: {later:?}");
    let applied: HashSet<String> = group
        .effects
        .applied()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let expected: HashSet<String> = rows
        .iter()
        .map(|r| r.event_id.clone())
        .filter(|id| *id != poison)
        .collect();
    assert_eq!(applied, expected);
    // It is not delivered again.
    ship(&mut producer.client, "ord-3", 0).await;
    let n = producer.all_published().await.len();
    assert!(
        eventually(PATIENCE, || async {
            group.effects.applied().len() >= n - 1
        })
        .await
    );
    assert_eq!(group.effects.calls(&poison), MAX_ATTEMPTS);
    group.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_not_ready_yet_is_redelivered_past_the_delivery_limit_and_applied_once() {
    // More Retry answers than the delivery limit allows returns: still never dead-lettered.
    let tries = MAX_ATTEMPTS + 2;
    let vhost = TestVhost::new().await;
    let effects = Effects {
        not_ready: Some(("ord-slow".into(), tries)),
        ..Default::default()
    };
    let group = Group::start(&vhost, "audit", &[], effects).await;
    let mut producer = Producer::start(&vhost).await;

    ship(&mut producer.client, "ord-slow", 1).await;
    ship(&mut producer.client, "ord-next", 1).await;
    let rows = producer.all_published().await;
    assert!(
        eventually(PATIENCE, || async {
            group.effects.applied().len() >= rows.len()
        })
        .await,
        "applied {} of {}",
        group.effects.applied().len(),
        rows.len()
    );
    let slow = group
        .effects
        .applied()
        .into_iter()
        .find(|e| is_created(e) && order_of(e) == "ord-slow")
        .expect("the slow event applied");
    assert_eq!(
        group.effects.calls(&slow.event_id),
        tries + 1,
        "redelivered until it applied"
    );
    let counts = group.effect_counts().await;
    assert_eq!(counts.len(), rows.len());
    assert!(counts.values().all(|n| *n == 1));
    assert!(vhost
        .take_all(&group.sub.dead_letter_queue())
        .await
        .is_empty());
    group.stop().await;
}
