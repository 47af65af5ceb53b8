// grpc-go-peer: a grpc-go server answering grpc.health.v1.Health/Check over mutual TLS, the peer
// that ordermesh's server stack is measured against in `mesh-bench --servers` (make bench). It
// presents the given certificate, requires a client certificate that chains to the given CA, and
// prints "listening <addr>" once it accepts connections.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"os"
	"runtime"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	caFile := flag.String("tls-ca", "", "CA that client certificates must chain to (PEM)")
	certFile := flag.String("tls-cert", "", "the server's certificate (PEM)")
	keyFile := flag.String("tls-key", "", "the server's private key (PEM)")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: Go's default, one per core)")
	flag.Parse()
	if *caFile == "" || *certFile == "" || *keyFile == "" {
		log.Fatal("grpc-go-peer: -tls-ca, -tls-cert and -tls-key are required (it serves mTLS only)")
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("grpc-go-peer: -tls-cert/-tls-key: %v", err)
	}
	caPEM, err := ioutil.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("grpc-go-peer: -tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatalf("grpc-go-peer: -tls-ca %s holds no PEM certificate", *caFile)
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("grpc-go-peer: -listen %s: %v", *listen, err)
	}
	server := grpc.NewServer(grpc.Creds(creds))
	checks := health.NewServer()
	checks.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(server, checks)
	fmt.Printf("listening %s\n", lis.Addr())
	os.Stdout.Sync()
	if err := server.Serve(lis); err != nil {
		log.Fatalf("grpc-go-peer: %v", err)
	}
}
