// The installed chain once more with native nftables capture: the test run's matrix entry for
// ISTIO_CNI_TEST_BACKEND=nftables (see test/harness/nftables.ts).
process.env.ISTIO_CNI_TEST_BACKEND = 'nftables';
await import('./chain.test.ts');
