//! Delivery over RabbitMQ: in order per shipment, nothing lost or doubled by a cut connection.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_go_through_rabbitmq_in_order_per_shipment() {
    let vhost = TestVhost::new().await;
    let all = Group::start(&vhost, "audit", &[], Effects::default()).await;
    let delivered_only = Group::start(
        &vhost,
        "billing",
        &["ShipmentDelivered"],
        Effects::default(),
    )
    .await;
    let mut producer = Producer::start(&vhost).await;

    for i in 0..4 {
        ship(&mut producer.client, &format!("ord-{i}"), JOURNEY.len()).await;
    }
    let rows = producer.all_published().await;
    assert_eq!(rows.len(), 4 * EVENTS_PER_JOURNEY, "events recorded");
    let seqs: Vec<i64> = rows.iter().filter_map(|r| r.sequence).collect();
    assert_eq!(
        seqs,
        (1..=rows.len() as i64).collect::<Vec<_>>(),
        "sequences follow the record order"
    );

    assert!(
        eventually(PATIENCE, || async {
            all.effects.applied().len() >= rows.len()
        })
        .await,
        "audit applied {} of {} events",
        all.effects.applied().len(),
        rows.len()
    );
    let applied = all.effects.applied();
    // Exactly the recorded events, with the sequences the relay gave them, once each.
    let by_id: HashMap<&str, i64> = rows
        .iter()
        .map(|r| (r.event_id.as_str(), r.sequence.unwrap_or(0)))
        .collect();
    assert_eq!(applied.len(), rows.len());
    for e in &applied {
        assert_eq!(
            by_id.get(e.event_id.as_str()).copied(),
            Some(e.sequence as i64),
            "{}",
            e.event_id
        );
        assert_eq!(e.producer, "shipping");
    }
    assert_eq!(
        applied
            .iter()
            .map(|e| &e.event_id)
            .collect::<HashSet<_>>()
            .len(),
        rows.len()
    );
    assert_in_order_per_shipment(&applied);
    // This group shares the producer's single queue order: all of the log in sequence order.
    let seq_order: Vec<u64> = applied.iter().map(|e| e.sequence).collect();
    let mut sorted = seq_order.clone();
    sorted.sort();
    assert_eq!(seq_order, sorted);

    // The billing group's binding lets only ShipmentDelivered through: one per shipment.
    assert!(
        eventually(PATIENCE, || async {
            delivered_only.effects.applied().len() >= 4
        })
        .await
    );
    let delivered = delivered_only.effects.applied();
    assert_eq!(delivered.len(), 4);
    assert!(delivered.iter().all(|e| matches!(
        e.payload,
        Some(ev::event_envelope::Payload::ShipmentDelivered(_))
    )));

    // The gRPC log still serves the same events with the same sequences.
    let log = ordermesh::testing::read_event_log(&producer.server.uri(), 0, &[], rows.len()).await;
    assert_eq!(
        log.iter()
            .map(|e| (e.event_id.clone(), e.sequence))
            .collect::<Vec<_>>(),
        rows.iter()
            .map(|r| (r.event_id.clone(), r.sequence.unwrap_or(0) as u64))
            .collect::<Vec<_>>()
    );
    // The inbox and checkpoint say the same.
    assert_eq!(
        ordermesh::events::inbox::checkpoint_of(&all.db, "audit", "shipping")
            .await
            .expect("checkpoint"),
        rows.len() as i64
    );
    assert!(vhost
        .take_all(&all.sub.dead_letter_queue())
        .await
        .is_empty());
    all.stop().await;
    delivered_only.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_connection_loses_no_event_and_applies_none_twice() {
    const SHIPMENTS: usize = 36;
    let vhost = TestVhost::new().await;
    let group = Group::start(&vhost, "audit", &[], Effects::default()).await;
    let producer = Producer::start(&vhost).await;
    let started = Instant::now();

    // Shipping keeps recording events, and the consumer applying them, while the test cuts
    // every connection to the vhost twice; production stops only after both sides came back
    // from the second cut (and at least SHIPMENTS shipments).
    let mut client = producer.client.clone();
    let keep_going = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let production = tokio::spawn({
        let keep_going = keep_going.clone();
        async move {
            let mut n = 0;
            while n < SHIPMENTS || keep_going.load(std::sync::atomic::Ordering::Relaxed) {
                ship(&mut client, &format!("ord-{n}"), JOURNEY.len()).await;
                n += 1;
            }
            n
        }
    });
    let mut cuts = Vec::new();
    for cut in 1..=2u64 {
        // Wait until events flow end to end, then cut.
        let want = group.effects.applied().len() + 10;
        assert!(
            eventually(PATIENCE, || async { group.effects.applied().len() >= want }).await,
            "events stopped flowing before cut {cut}"
        );
        let (connects, sessions) = (producer.connects(), group.sub.sessions());
        vhost.close_connections().await;
        cuts.push((group.effects.applied().len(), producer.rows().await.len()));
        // Both sides come back by themselves.
        assert!(
            eventually(PATIENCE, || async {
                producer.connects() > connects && group.sub.sessions() > sessions
            })
            .await,
            "after cut {cut}: relay connects {} (was {connects}), consumer sessions {} (was {sessions})",
            producer.connects(),
            group.sub.sessions()
        );
    }
    keep_going.store(false, std::sync::atomic::Ordering::Relaxed);
    let shipments = production.await.expect("production");
    let rows = producer.all_published().await;
    assert_eq!(
        rows.len(),
        shipments * EVENTS_PER_JOURNEY,
        "events recorded"
    );
    // The consumer's database is the ground truth: wait until it holds every effect.
    let all_written = eventually(PATIENCE, || async {
        group.effect_counts().await.len() >= rows.len()
    })
    .await;
    if !all_written {
        let counts = group.effect_counts().await;
        let missing: Vec<(i64, Option<i64>, &str)> = rows
            .iter()
            .filter(|r| !counts.contains_key(&r.event_id))
            .map(|r| (r.id, r.sequence, r.event_type.as_str()))
            .collect();
        panic!(
            "effects of {} of {} events written; missing (row, sequence, type) {missing:?}; dead letters {}; queue {:?}",
            counts.len(),
            rows.len(),
            vhost.take_all(&group.sub.dead_letter_queue()).await.len(),
            vhost.queue_depth(&group.sub.queue()).await
        );
    }
    // Stopped, the group applies nothing more: count what it did.
    let (effects, db, sub) = (group.effects.clone(), group.db.clone(), group.sub.clone());
    let counts_before_stop = group.effect_counts().await.len();
    group.stop().await;
    let applied = effects.applied();
    let counts = effect_counts(&db).await;
    assert_eq!(counts_before_stop, rows.len());
    assert_eq!(counts.len(), rows.len(), "every event has its effect");
    for r in &rows {
        assert_eq!(
            counts.get(&r.event_id),
            Some(&1),
            "effect of {} written once",
            r.event_id
        );
    }
    assert_eq!(applied.len(), rows.len());
    assert_in_order_per_shipment(&applied);
    let inbox = ordermesh::events::inbox::entry::Entity::find()
        .all(&db)
        .await
        .expect("inbox");
    assert_eq!(inbox.len(), rows.len());
    println!(
        "{} events, {} shipments; cuts at (applied, recorded) {:?}; relay connected {} times, consumer {} times; {:?}",
        rows.len(),
        shipments,
        cuts,
        producer.connects(),
        sub.sessions(),
        started.elapsed()
    );
}
