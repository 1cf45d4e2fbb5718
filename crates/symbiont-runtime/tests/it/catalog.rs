//! The model catalog: lookups, access rules and best-model selection.

use proptest::prelude::*;
use symbiont_runtime::config::{
    Model, ModelCapability, ModelProvider, ModelResourceRequirements, Slm, UnmappedAgentAccess,
};
use symbiont_runtime::models::{DenialReason, ModelCatalog, ModelCatalogError};

use super::config::reference_with_codellama;

fn reference_catalog() -> ModelCatalog {
    ModelCatalog::new(Slm::from_toml_str(&reference_with_codellama()).unwrap()).unwrap()
}

#[test]
fn catalog_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<ModelCatalog>();
    let c = reference_catalog();
    let c2 = c.clone();
    assert!(std::ptr::eq(c.list_models(), c2.list_models()));
}

#[test]
fn lookups_by_id_capability_agent_and_profile() {
    let c = reference_catalog();
    assert_eq!(c.get_model("llama2-7b").unwrap().name, "Llama 2 7B");
    assert!(c.get_model("nope").is_none());
    let ids: Vec<&str> = c.list_models().iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["llama2-7b", "codellama-7b"]);
    let text: Vec<&str> = c
        .get_models_with_capability(&ModelCapability::TextGeneration)
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(text, ["llama2-7b", "codellama-7b"]);
    let code = c.get_models_with_capability(&ModelCapability::CodeGeneration);
    assert_eq!(code.len(), 1);
    assert!(c
        .get_models_with_capability(&ModelCapability::Embeddings)
        .is_empty());
    let scanner = c.get_models_for_agent("security_scanner");
    assert_eq!(scanner.len(), 1);
    assert_eq!(scanner[0].id, "llama2-7b");
    assert_eq!(
        c.get_default_sandbox_profile()
            .unwrap()
            .resources
            .max_memory_mb,
        4096
    );
    assert_eq!(c.list_sandbox_profiles(), ["secure", "standard"]);
    assert_eq!(
        c.get_sandbox_profile("standard")
            .unwrap()
            .resources
            .max_memory_mb,
        1024
    );
    assert_eq!(
        c.get_model_requirements("codellama-7b")
            .unwrap()
            .min_memory_mb,
        6144
    );
    let stats = c.get_statistics();
    assert_eq!(stats.total_models, 2);
    assert_eq!(
        stats.models_by_capability[&ModelCapability::TextGeneration],
        2
    );
    assert_eq!(stats.mapped_agents, 2);
    assert_eq!(stats.min_memory_mb, Some(6144));
}

#[test]
fn access_checks_have_distinct_errors() {
    let c = reference_catalog();
    c.validate_model_access("llama2-7b", "security_scanner")
        .unwrap();
    assert!(matches!(
        c.validate_model_access("ghost", "security_scanner"),
        Err(ModelCatalogError::ModelNotFound { .. })
    ));
    assert!(matches!(
        c.validate_model_access("codellama-7b", "security_scanner"),
        Err(ModelCatalogError::AccessDenied {
            reason: DenialReason::NotInAgentMap,
            ..
        })
    ));
    // Least privilege: an agent with no entry may use nothing, and the error
    // names the key that would change that.
    let err = c
        .validate_model_access("llama2-7b", "stranger")
        .unwrap_err();
    assert!(matches!(
        err,
        ModelCatalogError::AccessDenied {
            reason: DenialReason::UnmappedAgent,
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("slm.model_allow_lists.unmapped_agent_access"),
        "{err}"
    );
    assert!(c.get_models_for_agent("stranger").is_empty());
    assert!(c
        .find_best_model_for_requirements(&[], None, Some("stranger"))
        .is_none());
}

#[test]
fn unmapped_agents_may_opt_in_to_every_global_model() {
    let text = reference_with_codellama().replace(
        "[slm.model_allow_lists.agent_model_maps]",
        "[slm.model_allow_lists]\nunmapped_agent_access = \"all_global_models\"\n[slm.model_allow_lists.agent_model_maps]",
    );
    let slm = Slm::from_toml_str(&text).unwrap();
    assert_eq!(
        slm.model_allow_lists.unmapped_agent_access,
        UnmappedAgentAccess::AllGlobalModels
    );
    let c = ModelCatalog::new(slm).unwrap();
    c.validate_model_access("codellama-7b", "stranger").unwrap();
    assert_eq!(c.get_models_for_agent("stranger").len(), 2);
    // A mapped agent keeps its own list.
    assert!(c
        .validate_model_access("codellama-7b", "security_scanner")
        .is_err());
}

#[test]
fn invalid_config_is_refused_by_the_catalog() {
    let slm = Slm {
        default_sandbox_profile: "none-such".into(),
        ..Slm::default()
    };
    assert!(matches!(
        ModelCatalog::new(slm),
        Err(ModelCatalogError::InvalidConfig(_))
    ));
}

#[test]
fn best_model_tie_break_is_documented_order() {
    let c = reference_catalog();
    // Both have TextGeneration: codellama needs less memory.
    assert_eq!(
        c.find_best_model_for_requirements(&[ModelCapability::TextGeneration], None, None)
            .unwrap()
            .id,
        "codellama-7b"
    );
    assert_eq!(
        c.find_best_model_for_requirements(
            &[ModelCapability::TextGeneration, ModelCapability::Reasoning],
            Some(8192),
            Some("security_scanner"),
        )
        .unwrap()
        .id,
        "llama2-7b"
    );
    assert!(c
        .find_best_model_for_requirements(&[ModelCapability::Reasoning], Some(4096), None)
        .is_none());
}

fn model(i: usize, caps: u8, mem: u64, cores: u8) -> Model {
    Model {
        id: format!("m{i}"),
        name: format!("Model {i}"),
        provider: ModelProvider::LocalFile {
            file_path: format!("/models/m{i}.gguf").into(),
            sha256: None,
        },
        capabilities: ModelCapability::ALL
            .into_iter()
            .filter(|c| caps & (1 << (*c as u8)) != 0)
            .collect(),
        resource_requirements: ModelResourceRequirements {
            min_memory_mb: mem,
            preferred_cpu_cores: f32::from(cores),
            gpu_requirements: None,
        },
        settings: Default::default(),
    }
}

/// Brute force: filter everything, then take the minimum by the documented
/// key (memory, cores, config position).
fn oracle<'a>(
    models: &'a [Model],
    allowed: &dyn Fn(&Model) -> bool,
    caps: &[ModelCapability],
    max_mem: Option<u64>,
) -> Option<&'a Model> {
    models
        .iter()
        .enumerate()
        .filter(|(_, m)| caps.iter().all(|c| m.capabilities.contains(c)))
        .filter(|(_, m)| max_mem.is_none_or(|x| m.resource_requirements.min_memory_mb <= x))
        .filter(|(_, m)| allowed(m))
        .min_by(|(ia, a), (ib, b)| {
            let ka = (
                a.resource_requirements.min_memory_mb,
                a.resource_requirements.preferred_cpu_cores,
            );
            let kb = (
                b.resource_requirements.min_memory_mb,
                b.resource_requirements.preferred_cpu_cores,
            );
            ka.partial_cmp(&kb).unwrap().then(ia.cmp(ib))
        })
        .map(|(_, m)| m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn find_best_matches_brute_force(
        specs in prop::collection::vec((0u8..64, 1u64..6, 1u8..4), 0..40),
        agent_sel in prop::collection::vec(any::<bool>(), 40),
        mapped in any::<bool>(),
        unmapped_all in any::<bool>(),
        want in 0u8..64,
        max_mem in prop::option::of(1u64..6),
        ask_agent in any::<bool>(),
    ) {
        let models: Vec<Model> = specs.iter().enumerate().map(|(i, &(c, m, k))| model(i, c, m * 512, k)).collect();
        let mut slm = Slm::default();
        slm.model_allow_lists.global_models = models.clone();
        let agent_list: Vec<String> = models.iter().enumerate().filter(|(i, _)| agent_sel[*i]).map(|(_, m)| m.id.clone()).collect();
        if mapped {
            slm.model_allow_lists.agent_model_maps.insert("a".into(), agent_list.clone());
        }
        slm.model_allow_lists.unmapped_agent_access = if unmapped_all { UnmappedAgentAccess::AllGlobalModels } else { UnmappedAgentAccess::Deny };
        let catalog = ModelCatalog::new(slm).unwrap();
        let caps: Vec<ModelCapability> = ModelCapability::ALL.into_iter().filter(|c| want & (1 << (*c as u8)) != 0).collect();
        let allowed = |m: &Model| -> bool {
            if !ask_agent { true } else if mapped { agent_list.contains(&m.id) } else { unmapped_all }
        };
        let agent = ask_agent.then_some("a");
        let got = catalog.find_best_model_for_requirements(&caps, max_mem.map(|x| x * 512), agent);
        let expected = oracle(&models, &allowed, &caps, max_mem.map(|x| x * 512));
        prop_assert_eq!(got.map(|m| &m.id), expected.map(|m| &m.id));
        // Access checks agree with the allow-list too.
        for m in &models {
            prop_assert_eq!(catalog.validate_model_access(&m.id, "a").is_ok(), if mapped { agent_list.contains(&m.id) } else { unmapped_all });
        }
    }
}

/// A model file's config: its profile is the secure one's controls with
/// the memory that the file and its slots need, which the runner's own
/// check then accepts; the twin: the unsized secure profile refuses the
/// same slots.
#[tokio::test]
async fn a_model_file_s_config_is_sized_to_fit_it() {
    use symbiont_runtime::config::{ModelResourceRequirements, SandboxProfile};
    use symbiont_runtime::models::{config_for_file, LocalGgufRunner, FILE_PROFILE};
    let model = symbiont_runtime::config::default_model_path().unwrap();
    assert!(
        model.is_file(),
        "default model missing: run scripts/setup.sh"
    );
    let one = config_for_file(&model, 1).unwrap();
    assert_eq!(one.slm.default_sandbox_profile, FILE_PROFILE);
    assert_eq!(one.model_id, "SmolLM2-135M-Instruct.Q4_1");
    let many = config_for_file(&model, 32).unwrap();
    let sized = &many.slm.sandbox_profiles[FILE_PROFILE];
    let secure = SandboxProfile::secure();
    assert!(
        sized.resources.max_memory_mb > secure.resources.max_memory_mb,
        "{many:?}"
    );
    assert_eq!(sized.network, secure.network);
    assert_eq!(sized.security, secure.security);
    assert_eq!(sized.process_limits, secure.process_limits);
    assert_eq!(sized.filesystem, secure.filesystem);
    assert!(many.summary.contains("max_memory_mb ="), "{}", many.summary);
    let build = |profile: SandboxProfile| {
        LocalGgufRunner::builder(&model, profile, ModelResourceRequirements::default())
            .worker_path("/nonexistent/worker")
            .slots(32)
            .cache_tokens(4 * 2048)
            .build()
    };
    match build(secure).await {
        Err(symbiont_runtime::models::SlmRunnerError::ResourceLimitExceeded { .. }) => {}
        other => panic!("the unsized profile took a cache of 4 contexts: {other:?}"),
    }
    match build(sized.clone()).await {
        // It fits; only the worker is missing.
        Err(symbiont_runtime::models::SlmRunnerError::InitializationFailed { reason }) => {
            assert!(reason.contains("worker"), "{reason}")
        }
        other => panic!("the sized profile was refused: {other:?}"),
    }
}
