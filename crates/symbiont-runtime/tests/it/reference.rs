//! The reference README's catalog examples, as written (inside a function
//! that returns errors), against the reference TOML.

use symbiont_runtime::config::{ModelCapability, Slm};
use symbiont_runtime::models::ModelCatalog;

use super::config::reference_with_codellama;

#[test]
fn agent_specific_and_capability_examples_run() -> Result<(), Box<dyn std::error::Error>> {
    let catalog = ModelCatalog::new(Slm::from_toml_str(&reference_with_codellama())?)?;

    // Get models allowed for a specific agent
    let agent_models = catalog.get_models_for_agent("security_scanner");
    for model in agent_models {
        println!("Agent can use: {} ({})", model.name, model.id);
    }

    // Validate model access
    catalog.validate_model_access("llama2-7b", "security_scanner")?;

    // Find models with specific capabilities
    let code_models = catalog.get_models_with_capability(&ModelCapability::CodeGeneration);

    // Find best model for requirements
    let best_model = catalog.find_best_model_for_requirements(
        &[ModelCapability::TextGeneration, ModelCapability::Reasoning],
        Some(8192), // Max 8GB memory (the reference's 4096 fits no model of its TOML)
        Some("security_scanner"), // For specific agent
    );
    assert_eq!(code_models.len(), 1);
    assert_eq!(best_model.map(|m| m.id.as_str()), Some("llama2-7b"));
    Ok(())
}
