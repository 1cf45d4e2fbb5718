//! Catalog speed: lookups and selection on 10, 1,000 and 10,000 models, and
//! loading a 1,000-model config. Targets (issue 2): find_best over 10,000
//! models < 100 µs, get_model < 100 ns, 1,000-model config < 20 ms.

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use symbiont_runtime::config::{ModelCapability, Slm};
use symbiont_runtime::models::ModelCatalog;

const CAPS: [&str; 6] = [
    "TextGeneration",
    "CodeGeneration",
    "Reasoning",
    "ToolUse",
    "FunctionCalling",
    "Embeddings",
];

/// A config of models `range` with varied capabilities and sizes, and 50
/// agents.
fn config_text(range: std::ops::Range<usize>) -> String {
    let mut s = String::from("[slm]\nenabled = true\n");
    for i in range.clone() {
        let caps: Vec<String> = CAPS
            .iter()
            .enumerate()
            .filter(|(c, _)| (i * 7 + c * 3) % 5 < 2 || *c == 0)
            .map(|(_, c)| format!("\"{c}\""))
            .collect();
        write!(
            s,
            "[[slm.model_allow_lists.global_models]]\nid = \"model-{i}\"\nname = \"Model {i}\"\n\
             provider = {{ LocalFile = {{ file_path = \"/models/model-{i}.gguf\" }} }}\n\
             capabilities = [{}]\n\
             [slm.model_allow_lists.global_models.resource_requirements]\n\
             min_memory_mb = {}\npreferred_cpu_cores = {}.0\n",
            caps.join(", "),
            256 + (i * 7919) % 16384,
            1 + i % 4
        )
        .unwrap();
    }
    s.push_str("[slm.model_allow_lists.agent_model_maps]\n");
    for a in 0..50 {
        let ids: Vec<String> = range
            .clone()
            .filter(|i| (i + a) % 3 == 0)
            .map(|i| format!("\"model-{i}\""))
            .collect();
        writeln!(s, "agent-{a} = [{}]", ids.join(", ")).unwrap();
    }
    s
}

/// The config of `n` models. Above a few thousand models the text passes
/// the loader's 4 MiB file limit, so it is parsed in chunks of 1,000 and
/// merged (as an embedding application building `Slm` itself would).
fn config(n: usize) -> Slm {
    let mut slm = Slm::from_toml_str(&config_text(0..n.min(1_000))).unwrap();
    for start in (1_000..n).step_by(1_000) {
        let part = Slm::from_toml_str(&config_text(start..(start + 1_000).min(n))).unwrap();
        let lists = &mut slm.model_allow_lists;
        lists
            .global_models
            .extend(part.model_allow_lists.global_models);
        for (agent, ids) in part.model_allow_lists.agent_model_maps {
            lists.agent_model_maps.entry(agent).or_default().extend(ids);
        }
    }
    slm
}

fn catalogs(c: &mut Criterion) {
    for n in [10usize, 1_000, 10_000] {
        let catalog = ModelCatalog::new(config(n)).unwrap();
        let mut g = c.benchmark_group(format!("catalog_{n}"));
        let probe = format!("model-{}", n / 2);
        g.bench_function("get_model", |b| {
            b.iter(|| black_box(catalog.get_model(black_box(&probe))))
        });
        g.bench_function("get_models_with_capability", |b| {
            b.iter(|| black_box(catalog.get_models_with_capability(&ModelCapability::Reasoning)))
        });
        let want = [ModelCapability::TextGeneration, ModelCapability::Reasoning];
        g.bench_with_input(BenchmarkId::new("find_best", "no_agent"), &want, |b, w| {
            b.iter(|| black_box(catalog.find_best_model_for_requirements(w, Some(8192), None)))
        });
        g.bench_with_input(BenchmarkId::new("find_best", "agent"), &want, |b, w| {
            b.iter(|| {
                black_box(catalog.find_best_model_for_requirements(w, Some(8192), Some("agent-7")))
            })
        });
        g.finish();
    }
}

fn loading(c: &mut Criterion) {
    let text = config_text(0..1_000);
    let mut g = c.benchmark_group("config");
    g.sample_size(20);
    g.bench_function("parse_validate_index_1000_models", |b| {
        b.iter(|| {
            let slm = Slm::from_toml_str(black_box(&text)).unwrap();
            black_box(ModelCatalog::new(slm).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, catalogs, loading);
criterion_main!(benches);
