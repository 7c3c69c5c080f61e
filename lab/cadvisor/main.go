// Command cadvisor runs cAdvisor's own container manager and Prometheus exporter, from the
// released cAdvisor modules, behind a small command line of the lab's.
//
// Why a main of our own: cAdvisor's command (module github.com/google/cadvisor/cmd) is not
// served by the Go module proxy, while the modules that hold everything it runs are:
// github.com/google/cadvisor (the Docker container handler) and github.com/google/cadvisor/lib
// (the manager, housekeeping, cgroup readers and the Prometheus collectors). This file only
// parses flags, starts the manager and serves the collectors over HTTP. Flag names and
// meanings follow cAdvisor's own command where the lab and docker-stack.yml use them.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	// Registers the Docker container handler with the manager's plugin registry.
	_ "github.com/google/cadvisor/container/docker/install"

	"github.com/google/cadvisor/lib/cache/memory"
	"github.com/google/cadvisor/lib/container"
	"github.com/google/cadvisor/lib/manager"
	"github.com/google/cadvisor/lib/metrics"
	info "github.com/google/cadvisor/lib/model"
	"github.com/google/cadvisor/lib/utils/sysfs"
	"github.com/google/cadvisor/lib/version"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Off by default, as in cAdvisor's command: costly, or meaningless without extra setup.
var defaultDisabled = container.MetricSet{
	container.MemoryNumaMetrics:              struct{}{},
	container.NetworkTcpUsageMetrics:         struct{}{},
	container.NetworkAdvancedTcpUsageMetrics: struct{}{},
	container.NetworkUdpUsageMetrics:         struct{}{},
	container.PerfMetrics:                    struct{}{},
	container.ProcessSchedulerMetrics:        struct{}{},
	container.HugetlbUsageMetrics:            struct{}{},
	container.ReferencedMemoryMetrics:        struct{}{},
	container.CPUTopologyMetrics:             struct{}{},
	container.ResctrlMetrics:                 struct{}{},
	container.CPUSetMetrics:                  struct{}{},
	container.PressureMetrics:                struct{}{},
}

var (
	listenIP        = flag.String("listen_ip", "", "IP to listen on, all addresses when empty")
	port            = flag.Int("port", 8080, "port to listen on")
	metricsPath     = flag.String("prometheus_endpoint", "/metrics", "path of the Prometheus exporter")
	storageDuration = flag.Duration("storage_duration", 2*time.Minute, "how long stats are kept in memory")
	storeLabels     = flag.Bool("store_container_labels", true, "export every container label and environment variable as a Prometheus label")
	allowedLabels   = flag.String("whitelisted_container_labels", "", "comma-separated container labels exported when store_container_labels is false")
	rawPrefixes     = flag.String("raw_cgroup_prefix_whitelist", "", "comma-separated cgroup path prefixes collected besides Docker's containers")
	envAllowed      = flag.String("env_metadata_whitelist", "", "comma-separated environment variable prefixes collected")
	printVersion    = flag.Bool("version", false, "print the version and exit")
	disabled        = container.MetricSet{}
	enabled         = container.MetricSet{}
)

func init() {
	for k := range defaultDisabled {
		disabled[k] = struct{}{}
	}
	flag.Var(&disabled, "disable_metrics", "comma-separated metric kinds not to collect: "+container.AllMetrics.String())
	flag.Var(&enabled, "enable_metrics", "comma-separated metric kinds to collect besides the default ones")
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func main() {
	klog.InitFlags(nil)
	flag.Parse()
	if *printVersion {
		fmt.Printf("cAdvisor version %s (%s)\n", version.Version, version.Revision)
		return
	}
	included := container.AllMetrics.Difference(disabled).Append(enabled)

	cache := memory.New(*storageDuration, nil)
	housekeeping := manager.HousekeepingConfig{Interval: manager.HousekeepingInterval, AllowDynamic: boolPtr(true)}
	if f := flag.Lookup("allow_dynamic_housekeeping"); f != nil {
		v, err := strconv.ParseBool(f.Value.String())
		if err == nil {
			housekeeping.AllowDynamic = boolPtr(v)
		}
	}
	rawPrefixList := split(*rawPrefixes)
	if len(rawPrefixList) == 0 {
		rawPrefixList = []string{""} // what the raw handler expects for "none besides Docker's" with --docker_only
	}
	mgr, err := manager.New(cache, sysfs.NewRealSysFs(), housekeeping, included, rawPrefixList, split(*envAllowed), "", 0)
	if err != nil {
		klog.Fatalf("cadvisor: cannot create the manager: %v", err)
	}
	if err := mgr.Start(); err != nil {
		klog.Fatalf("cadvisor: cannot start the manager: %v", err)
	}

	labels := metrics.DefaultContainerLabels
	if !*storeLabels {
		labels = metrics.BaseContainerLabels(split(*allowedLabels))
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.NewPrometheusCollector(mgr, labels, included, clock.RealClock{},
			info.RequestOptions{IdType: info.TypeName, Count: 1, Recursive: true}),
		metrics.NewPrometheusMachineCollector(mgr, included),
	)
	mux := http.NewServeMux()
	mux.Handle(*metricsPath, promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })

	addr := net.JoinHostPort(*listenIP, strconv.Itoa(*port))
	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		<-stop
		_ = mgr.Stop()
		_ = server.Close()
	}()
	klog.Infof("cadvisor %s: serving %s on %s (metrics: %s)", version.Version, *metricsPath, addr, included)
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		klog.Fatalf("cadvisor: %v", err)
	}
}

func boolPtr(b bool) *bool { return &b }
