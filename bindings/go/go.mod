module github.com/mc-project/mc/bindings/go

go 1.24
