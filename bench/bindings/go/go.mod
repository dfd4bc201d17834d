module mcbench

go 1.24

require github.com/mc-project/mc/bindings/go v0.0.0

replace github.com/mc-project/mc/bindings/go => ../../../bindings/go
