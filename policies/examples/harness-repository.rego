# Builds must come from an allowed repository.
# Input: the shape Harness SSCA's SLSA verification step gives OPA, where
# input[0].outcome.stepArtifacts.provenanceArtifacts[0] is the in-toto statement.
# Rego v0 syntax, as in Harness' own examples.
package slsa

allowed_repositories := {"https://github.com/acme/app"}

deny[msg] {
	repo := input[0].outcome.stepArtifacts.provenanceArtifacts[0].predicate.buildDefinition.externalParameters.codeMetadata.repositoryURL
	not allowed_repositories[repo]
	msg := sprintf("repository %s is not on the allowed list", [repo])
}

deny[msg] {
	not input[0].outcome.stepArtifacts.provenanceArtifacts[0].predicate.buildDefinition.externalParameters.codeMetadata.repositoryURL
	msg := "the provenance does not name the repository it was built from"
}
