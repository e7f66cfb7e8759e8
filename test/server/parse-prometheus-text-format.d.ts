// The package ships no types: it exports one function that parses Prometheus text exposition
// into metric families.
declare module 'parse-prometheus-text-format' {
  function parsePrometheusTextFormat(text: string): unknown[];
  export default parsePrometheusTextFormat;
}
