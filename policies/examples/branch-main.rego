# Builds must come from the main branch.
# Input: the in-toto statement itself (`input.predicate...`), Rego v1 syntax.
package attestd.examples.branch_main

code_metadata := input.predicate.buildDefinition.externalParameters.codeMetadata

deny contains msg if {
	code_metadata.branch != "main"
	msg := "builds must come from main"
}

deny contains msg if {
	not code_metadata.branch
	msg := "the provenance does not name the branch it was built from"
}
