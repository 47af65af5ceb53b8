//! Items: created, read and paged, and the requests inventory refuses.

use super::*;

async fn items_are_created_read_and_paged(backend: Backend) {
    let mut h = start(backend).await;
    for sku in ["A-1", "B-2", "C-3", "D-4", "E-5"] {
        create(&mut h.client, sku, 10).await;
    }
    let got = item(&mut h.client, "C-3").await;
    assert_eq!(got.name, "Item C-3");
    assert_eq!(got.price, usd(1999));
    assert_eq!((got.on_hand, got.reserved, got.available), (10, 0, 10));

    let dup = h
        .client
        .create_item(pb::CreateItemRequest {
            sku: "A-1".into(),
            name: "again".into(),
            price: usd(1),
            ..Default::default()
        })
        .await;
    assert_eq!(dup.unwrap_err().code(), Code::AlreadyExists);
    let missing = h
        .client
        .get_item(pb::GetItemRequest { sku: "NOPE".into() })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_items(pb::ListItemsRequest {
                page_size: 2,
                page_token: token,
                low_stock_only: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.sku));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["A-1", "B-2", "C-3", "D-4", "E-5"]);

    // A token minted without the low-stock filter is refused with it.
    let first = h
        .client
        .list_items(pb::ListItemsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mismatched = h
        .client
        .list_items(pb::ListItemsRequest {
            page_size: 2,
            page_token: first.next_page_token,
            low_stock_only: true,
        })
        .await;
    assert_invalid(mismatched, "page_token");

    h.client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "B-2".into(),
            delta: -9,
            reason: "breakage".into(),
        })
        .await
        .unwrap();
    let low = h
        .client
        .list_items(pb::ListItemsRequest {
            low_stock_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        low.items.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>(),
        ["B-2"]
    );
}

async fn bad_input_is_refused_with_the_field_named(backend: Backend) {
    let mut h = start(backend).await;
    create(&mut h.client, "SKU", 5).await;
    let c = &mut h.client;
    let base = pb::CreateItemRequest {
        sku: "X".into(),
        name: "x".into(),
        price: usd(1),
        initial_stock: 1,
        low_stock_threshold: 0,
    };
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            sku: "".into(),
            ..base.clone()
        })
        .await,
        "sku",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            sku: "a b".into(),
            ..base.clone()
        })
        .await,
        "sku",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            name: " ".into(),
            ..base.clone()
        })
        .await,
        "name",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            initial_stock: -1,
            ..base.clone()
        })
        .await,
        "initial_stock",
    );
    let unknown_currency = pb::CreateItemRequest {
        price: Some(Money {
            currency_code: "ABC".into(),
            amount_minor: 100,
        }),
        ..base.clone()
    };
    let e = c.create_item(unknown_currency).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("price") && e.message().contains("ABC"),
        "{}",
        e.message()
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            price: usd(-5),
            ..base.clone()
        })
        .await,
        "price",
    );
    assert_invalid(
        c.create_item(pb::CreateItemRequest {
            price: None,
            ..base
        })
        .await,
        "price",
    );
    assert_invalid(
        c.get_item(pb::GetItemRequest { sku: "".into() }).await,
        "sku",
    );
    assert_invalid(
        c.list_items(pb::ListItemsRequest {
            page_size: 101,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        c.list_items(pb::ListItemsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        c.list_items(pb::ListItemsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_invalid(
        c.adjust_stock(pb::AdjustStockRequest {
            sku: "SKU".into(),
            delta: 0,
            reason: "".into(),
        })
        .await,
        "delta",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("", "k", &[("SKU", 1)])).await,
        "order_id",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "", &[("SKU", 1)])).await,
        "idempotency_key",
    );
    assert_invalid(c.reserve_stock(reserve_req("o1", "k", &[])).await, "lines");
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", -2)]))
            .await,
        "lines[0].quantity",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", 0)])).await,
        "lines[0].quantity",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", 1), ("", 1)]))
            .await,
        "lines[1].sku",
    );
    assert_invalid(
        c.reserve_stock(reserve_req("o1", "k", &[("SKU", 1), ("SKU", 1)]))
            .await,
        "lines[1].sku",
    );
    assert_invalid(
        c.watch_stock(pb::WatchStockRequest { skus: vec![] })
            .await
            .map(|_| ()),
        "skus",
    );
    // Nothing above changed the stock.
    let i = item(c, "SKU").await;
    assert_eq!((i.on_hand, i.reserved), (5, 0));
}

ordermesh::backend_tests!(
    items_are_created_read_and_paged,
    bad_input_is_refused_with_the_field_named,
);
