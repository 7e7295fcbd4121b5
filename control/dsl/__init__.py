"""Vamp's DSL: read breeds, blueprints, deployments, gateways, scales, conditions, SLAs, escalations and
workflows into an immutable model with every shorthand expanded (`read`, `read_text`), write them back in
Vamp's long form (`to_dict`), resolve references to stored artifacts and check that a blueprint is complete
before it is deployed (`resolve_references`, `validate_complete`)."""
from control.dsl.errors import DslError
from control.dsl.reader import KINDS, canonical_kind, read, read_text
from control.dsl.references import (HostReference, LocalReference, Template, TraitReference, ValueReference,
                                    parse_template, references, render)
from control.dsl.resolve import (effective_environment, effective_health_checks, referenced_cluster,
                                 resolve_references, validate_complete)
from control.dsl.writer import kind_of, to_dict

__all__ = ["DslError", "KINDS", "canonical_kind", "read", "read_text", "to_dict", "kind_of", "Template",
           "parse_template", "render", "references", "ValueReference", "LocalReference", "HostReference",
           "TraitReference", "resolve_references", "validate_complete", "effective_environment",
           "effective_health_checks", "referenced_cluster"]
