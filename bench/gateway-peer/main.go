// grpc-gateway-peer: a stock grpc-gateway (APIv1) REST/JSON -> gRPC proxy for ordermesh's
// InventoryService, OrderService, PaymentService and ShippingService, used as the benchmark
// peer of ordermesh's own edge gateway. Built by build.sh; not part of ordermesh.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/grpc-ecosystem/grpc-gateway/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	inventoryv1 "ordermeshpeer/gen/ordermesh/inventory/v1"
	orderv1 "ordermeshpeer/gen/ordermesh/order/v1"
	paymentv1 "ordermeshpeer/gen/ordermesh/payment/v1"
	shippingv1 "ordermeshpeer/gen/ordermesh/shipping/v1"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// target accepts "host:port" or "http://host:port" / "https://host:port" (scheme dropped).
func target(s string) string {
	for _, p := range []string{"http://", "https://"} {
		s = strings.TrimPrefix(s, p)
	}
	return strings.TrimSuffix(s, "/")
}

func main() {
	listen := flag.String("listen", env("PEER_LISTEN", "127.0.0.1:8081"), "HTTP listen address (env PEER_LISTEN)")
	inventory := flag.String("inventory", env("INVENTORY_ADDR", os.Getenv("INVENTORY_URL")), "InventoryService gRPC address host:port (env INVENTORY_ADDR, else INVENTORY_URL); empty: not registered")
	order := flag.String("order", env("ORDER_ADDR", os.Getenv("ORDER_URL")), "OrderService gRPC address (env ORDER_ADDR, else ORDER_URL)")
	payment := flag.String("payment", env("PAYMENT_ADDR", os.Getenv("PAYMENT_URL")), "PaymentService gRPC address (env PAYMENT_ADDR, else PAYMENT_URL)")
	shipping := flag.String("shipping", env("SHIPPING_ADDR", os.Getenv("SHIPPING_URL")), "ShippingService gRPC address (env SHIPPING_ADDR, else SHIPPING_URL)")
	caFile := flag.String("tls-ca", env("PEER_TLS_CA", ""), "CA bundle for upstream TLS (env PEER_TLS_CA); empty: plaintext gRPC")
	certFile := flag.String("tls-cert", env("PEER_TLS_CERT", ""), "client certificate for upstream mTLS (env PEER_TLS_CERT)")
	keyFile := flag.String("tls-key", env("PEER_TLS_KEY", ""), "client key for upstream mTLS (env PEER_TLS_KEY)")
	serverName := flag.String("tls-server-name", env("PEER_TLS_SERVER_NAME", ""), "server name to verify upstream certificates against (env PEER_TLS_SERVER_NAME)")
	flag.Parse()

	dial := []grpc.DialOption{grpc.WithInsecure()}
	if *caFile != "" {
		pem, err := ioutil.ReadFile(*caFile)
		if err != nil {
			log.Fatalf("tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("tls-ca: no certificates in %s", *caFile)
		}
		cfg := &tls.Config{RootCAs: pool, ServerName: *serverName}
		if *certFile != "" || *keyFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				log.Fatalf("tls-cert/tls-key: %v", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		dial = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mux := runtime.NewServeMux()
	type reg struct {
		name, addr string
		fn         func(context.Context, *runtime.ServeMux, string, []grpc.DialOption) error
	}
	n := 0
	for _, r := range []reg{
		{"inventory", *inventory, inventoryv1.RegisterInventoryServiceHandlerFromEndpoint},
		{"order", *order, orderv1.RegisterOrderServiceHandlerFromEndpoint},
		{"payment", *payment, paymentv1.RegisterPaymentServiceHandlerFromEndpoint},
		{"shipping", *shipping, shippingv1.RegisterShippingServiceHandlerFromEndpoint},
	} {
		if r.addr == "" {
			continue
		}
		if err := r.fn(ctx, mux, target(r.addr), dial); err != nil {
			log.Fatalf("register %s -> %s: %v", r.name, r.addr, err)
		}
		log.Printf("%s -> %s", r.name, target(r.addr))
		n++
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "grpc-gateway-peer: no upstream given (-inventory/-order/-payment/-shipping or INVENTORY_ADDR/...)")
		os.Exit(2)
	}

	srv := &http.Server{Addr: *listen, Handler: mux}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		srv.Close()
	}()
	log.Printf("grpc-gateway-peer listening on http://%s", *listen)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
